"""Calcium supplement checks on draft orders (order-select / order-sign only):

- `calcium-dose-split`: one administration of a drafted calcium supplement above 600 mg
  elemental calcium (from the salt: carbonate 40%, citrate 21%, or the stated elemental
  strength): split it into doses of about 500-600 mg.
- `calcium-kidney-stones`: a history of nephrolithiasis with a drafted calcium supplement, or
  with drafted vitamin D making the total > 4,000 IU/day: dietary calcium first (WHI: calcium +
  vitamin D raised kidney stones, HR 1.17).
"""

from __future__ import annotations

import math

from ..facts.model import ConditionCategory as C
from ..facts.model import Facts, Ingredient
from ..guideline import Guideline
from . import common
from .findings import Delete, Finding, Proposal
from .topic import Topic

DOSE_SPLIT = "calcium-dose-split"
KIDNEY_STONES = "calcium-kidney-stones"
TOPICS = (Topic(DOSE_SPLIT, safety=True), Topic(KIDNEY_STONES, safety=True))


def _drafted_calcium(facts: Facts):
    if facts.hook == "patient-view":
        return []
    return [d for d in common.focus_drafts(facts) if d.has(Ingredient.CALCIUM)]


def dose_split(facts: Facts, g: Guideline) -> Finding | None:
    if not g.enabled(DOSE_SPLIT):
        return None
    limit = g.safety_value("calcium_max_per_dose_mg")
    split = g.safety_value("calcium_split_dose_mg")
    large = [
        d
        for d in _drafted_calcium(facts)
        if d.calcium_mg_per_dose is not None and d.calcium_mg_per_dose > limit
    ]
    if not large:
        return None
    drafts = []
    for d in large:
        assert d.calcium_mg_per_dose is not None
        doses = math.ceil(d.calcium_mg_per_dose / split)
        drafts.append(
            {
                "name": d.name,
                "mg_per_dose": d.calcium_mg_per_dose,
                "mg_per_day": d.calcium_mg_per_day,
                "doses": doses,
                "each_mg": d.calcium_mg_per_dose / doses,
            }
        )
    data = {"drafts": drafts, "limit": limit}
    return Finding(DOSE_SPLIT, "info", g.topics[DOSE_SPLIT].cite, data)


def kidney_stones(facts: Facts, g: Guideline) -> Finding | None:
    if not g.enabled(KIDNEY_STONES) or facts.hook == "patient-view":
        return None
    if not common.has(facts, C.NEPHROLITHIASIS):
        return None
    calcium = _drafted_calcium(facts)
    vitamin_d = common.vitamin_d_products(common.focus_drafts(facts))
    total_iu = common.daily_vitamin_d(
        common.vitamin_d_products(common.unique((*facts.medications, *facts.drafts)))
    )
    high_d = bool(vitamin_d) and total_iu > g.dose("risk_daily_iu_above")
    if not calcium and not high_d:
        return None
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in calcium if d.id is not None)
    proposals = (Proposal("remove", deletes, {"count": len(deletes)}),) if deletes else ()
    stones = [
        {"display": c.display or c.code[1], "code": c.code[1]}
        for c in facts.conditions
        if C.NEPHROLITHIASIS in c.categories
    ]
    data = {
        "stones": stones,
        "calcium": [
            {
                "name": d.name,
                "mg_per_day": d.calcium_mg_per_day,
                "mg_per_dose": d.calcium_mg_per_dose,
            }
            for d in calcium
        ],
        "high_d": high_d,
        "total_iu": total_iu,
        "risk_iu": g.dose("risk_daily_iu_above"),
        "hazard_ratio": g.safety_value("kidney_stones_hazard_ratio"),
    }
    return Finding(KIDNEY_STONES, "warning", g.topics[KIDNEY_STONES].cite, data, proposals)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    return [f for f in (dose_split(facts, g), kidney_stones(facts, g)) if f]
