"""The 25(OH)D bands the picture draws, read from the active guideline profile
(`cds_service/guideline.py`, `guidelines/*.toml`): the same thresholds the rules apply."""

from __future__ import annotations

from dataclasses import dataclass

from ..guideline import Guideline

NMOL_PER_NG = 2.496  # contract §4: ng/mL × 2.496 = nmol/L


@dataclass(frozen=True)
class Bands:
    deficiency_below: float  # ng/mL
    insufficiency_below: float  # ng/mL; at or above it: target
    high_above: float  # ng/mL
    source: str

    def band(self, ng_ml: float, comparator: str | None = None) -> str:
        """deficient | insufficient | target | high; '<5' counts as below 5 (contract §5)."""
        below = comparator == "<"
        if ng_ml < self.deficiency_below or (below and ng_ml <= self.deficiency_below):
            return "deficient"
        if ng_ml < self.insufficiency_below or (below and ng_ml <= self.insufficiency_below):
            return "insufficient"
        if ng_ml > self.high_above or (comparator == ">" and ng_ml >= self.high_above):
            return "high"
        return "target"


def bands_for(guideline: Guideline) -> Bands:
    """The bands of the active guideline profile (`CDS_GUIDELINE_PROFILE`), with their sources."""
    names = ("deficiency_below_ng_ml", "insufficiency_below_ng_ml", "high_above_ng_ml")
    cites = dict.fromkeys(guideline.levels[name].cite for name in names)
    sources = "; ".join(guideline.citation(key).label for key in cites)
    source = f"profile {guideline.profile} ({guideline.title}): {sources}"
    if not guideline.enabled("vitd-insufficiency"):
        source += (
            "; this profile sets no 25(OH)D targets for healthy people (a measured level below"
            " the deficiency band is still treated): bands shown for reference only"
        )
    return Bands(
        deficiency_below=guideline.level("deficiency_below_ng_ml"),
        insufficiency_below=guideline.level("insufficiency_below_ng_ml"),
        high_above=guideline.level("high_above_ng_ml"),
        source=source,
    )
