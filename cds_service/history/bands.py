"""The 25(OH)D bands the picture draws: read from one function so the source is one place.

Until the guideline configuration (`cds_service/guideline.py`, profiles in `guidelines/`) is on
this branch, `active_bands()` returns the contract's defaults (§4: deficiency < 20 ng/mL,
insufficiency < 30 ng/mL, high > 100 ng/mL; Endocrine Society 2011). Switching to the active
profile changes only the body of `active_bands()`.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def active_bands() -> Bands:
    """The bands of the active guideline profile (for now: the contract defaults)."""
    return Bands(
        deficiency_below=20.0,
        insufficiency_below=30.0,
        high_above=100.0,
        source="contract §4 defaults (Endocrine Society 2011; > 100 ng/mL potentially harmful)",
    )
