"""`vitd-empiric` (profile es2024 only): empiric daily vitamin D without a level.

Endocrine Society 2024: adults >= 75, pregnancy, and ages 1-18, not already on >= 400 IU/day,
without hypercalcaemia, sarcoidosis, primary hyperparathyroidism or a raised serum calcium, and
without a measured deficiency (`vitd-deficiency` speaks: ES 2024 excludes established
indications) or a high level. Daily rather than intermittent high doses; the doses are the IOM
2011 RDA, since ES 2024 names none. patient-view only.
"""

from __future__ import annotations

from ..facts.model import Facts
from ..guideline import Guideline
from . import common, monitoring
from .findings import Create, Finding, Proposal
from .topic import Topic

TOPIC = "vitd-empiric"
TOPICS = (Topic(TOPIC),)


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
    if common.needs_calcium_watch(facts, g):
        return []
    level = common.current_level(facts, g)
    if level is not None and (
        common.below(level, g.level("deficiency_below_ng_ml"))  # vitd-deficiency speaks
        or common.above(level, g.level("high_above_ng_ml"))  # vitd-high-level: hold vitamin D
    ):
        return []
    daily_iu = common.daily_vitamin_d(facts.medications)
    if daily_iu >= g.empiric.already_on_daily_iu:
        return []
    if monitoring.indications(facts, g, daily_iu):
        return []  # an established indication for a test: ES 2024 does not apply
    dose = g.empiric.doses[who]
    order = common.order_for(facts, g, dose)
    data = {
        "group": who,
        "dose": dose,
        "range": g.empiric.ranges[who],
        "daily_iu": daily_iu,
        "on_file": common.describe_all(common.vitamin_d_products(facts.medications)),
        "orderable": order is not None,
        "form": common.dose_form(facts, g),
    }
    proposals = (Proposal("daily", (Create(order),), {"dose": dose}),) if order else ()
    return [Finding(TOPIC, "info", g.empiric.cite, data, proposals)]
