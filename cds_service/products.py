"""Which product gives a vitamin D dose exactly: knowledge/orderables.json, no I/O beyond it.

A suggested order names an RxNorm clinical drug and a whole number of its units (tablets,
capsules) whose strength times the count is the dose shown (contract §4 "Suggested orders").
The largest strength that divides the dose wins, so 6,000 IU is 2 × 3,000 IU tablets and 800 IU
is 2 × 400 IU; a dose that no listed product gives in at most `max_units` units (600 IU,
1,500 IU) has no product, and nothing is ordered for it. Oral liquids (for children under 4)
have no verified code yet: `form="liquid"` finds none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .knowledge import load


@dataclass(frozen=True)
class Product:
    code: str  # RxNorm clinical drug
    text: str  # RxNorm's name
    strength_iu: int
    form: str  # "tablet" | "capsule" | "liquid"
    units: int  # per administration: strength_iu * units == the dose


@cache
def for_dose(dose_iu: int, form: str = "solid") -> Product | None:
    """The product and count that give `dose_iu` exactly; None when none does."""
    d3 = load("orderables")["cholecalciferol"]
    for entry in d3.get(form, ()):
        strength = int(entry["strength_iu"])
        units, rest = divmod(dose_iu, strength)
        if rest == 0 and 1 <= units <= d3["max_units"]:
            return Product(entry["code"], entry["text"], strength, entry["form"], units)
    return None
