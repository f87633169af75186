"""`vitd-empiric` (profile es2024 only): empiric daily vitamin D without a level.

Endocrine Society 2024: adults >= 75, pregnancy, and ages 1-18, not already on >= 400 IU/day,
without hypercalcaemia, sarcoidosis or primary hyperparathyroidism. Daily rather than
intermittent high doses. patient-view only.
"""

from __future__ import annotations

from ..facts.model import Facts
from ..guideline import Guideline
from . import common
from .findings import Create, Finding, MedicationOrder, Proposal

TOPIC = "vitd-empiric"


def group(facts: Facts, g: Guideline) -> str | None:
    if facts.pregnant:
        return "pregnancy"
    age = facts.patient.age_years if facts.patient else None
    if age is None:
        return None
    if age >= g.empiric.adult_from_years:
        return "older_adult"
    if g.age("child_from_years") <= age <= g.empiric.max_child_years:
        return "child"
    return None


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC) or facts.hook != "patient-view":
        return []
    who = group(facts, g)
    if who is None:
        return []
    if common.has(facts, *common.HYPERCALCEMIA_RISKS):
        return []
    daily_iu = common.daily_vitamin_d(facts.medications)
    if daily_iu >= g.empiric.already_on_daily_iu:
        return []
    dose = g.empiric.doses[who]
    data = {"group": who, "dose": dose, "range": g.empiric.ranges[who], "daily_iu": daily_iu}
    proposal = Proposal("daily", (Create(MedicationOrder(dose)),), {"dose": dose})
    return [Finding(TOPIC, "info", g.empiric.cite, data, (proposal,))]
