"""`vitd-test-overuse`: a drafted 25(OH)D test that changes nothing (contract §4).

Order-select / order-sign, for each drafted 25(OH)D ServiceRequest (dated by its occurrence,
else authoredOn, else now):
- less than `testing.retest_after_days` (90) after the latest valid result: a level reflects a
  change of dose only after about 3 months (ES 2011);
- in a profile that spares healthy adults (es2024): an adult 19-74, not pregnant, with no risk
  indication of `vitd-no-recent-level` (ES 2024 advises against routine testing).
Never when the latest result is uninterpretable or above 100 ng/mL, nor with hypercalcaemia,
sarcoidosis or primary hyperparathyroidism on file. Suggestion: delete the draft test.
"""

from __future__ import annotations

from ..facts.model import Facts, LabDraft
from ..guideline import Guideline
from . import common, monitoring, vitamin_d_status
from .findings import Delete, Finding, Proposal
from .topic import Topic

TOPIC = "vitd-test-overuse"
TOPICS = (Topic(TOPIC),)


def _focus(facts: Facts) -> list[LabDraft]:
    if facts.hook != "order-select":
        return list(facts.lab_drafts)
    chosen = {s.split("/", 1)[-1] for s in facts.selections}
    return [d for d in facts.lab_drafts if d.id in chosen]


def _healthy_adult(facts: Facts, g: Guideline) -> bool:
    age = facts.patient.age_years if facts.patient else None
    if age is None or facts.pregnant:
        return False
    if not g.age("adult_from_years") <= age < g.empiric.adult_from_years:
        return False
    daily_iu = common.daily_vitamin_d(facts.medications)
    return not monitoring.indications(facts, g, daily_iu)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC) or facts.hook == "patient-view":
        return []
    tests = _focus(facts)
    if not tests:
        return []
    latest = common.latest_result(facts)
    if latest is not None and not latest.interpretable:
        return []  # a result nobody could read: a repeat is what the lab card asks for
    level = common.latest_valid(facts)
    if level is not None and common.above(level, g.level("high_above_ng_ml")):
        return []
    if common.has(facts, *common.HYPERCALCEMIA_RISKS):
        return []
    soon: list[LabDraft] = []
    if level is not None and level.when is not None:
        limit = g.retest_after_days.value
        for test in tests:
            when = test.when or facts.now
            if (when - level.when).total_seconds() < limit * 86400:
                soon.append(test)
    routine = bool(g.spare_healthy_adults.value) and _healthy_adult(facts, g)
    flagged = tests if routine else soon
    if not flagged:
        return []
    deletes = tuple(
        Delete(t.resource_type, t.id, t.name) for t in flagged if t.id is not None
    )
    data = {
        "tests": [{"name": t.name, "loinc": t.loinc, "date": t.when} for t in flagged],
        "level": vitamin_d_status.level_data(level) if level else None,
        "days": [
            round(((t.when or facts.now) - level.when).total_seconds() / 86400)
            if level is not None and level.when is not None
            else None
            for t in flagged
        ],
        "soon": bool(soon),
        "routine": routine,
        "retest_days": g.retest_after_days.value,
    }
    cite = g.retest_after_days.cite if soon else g.spare_healthy_adults.cite
    proposals = (Proposal("remove", deletes, {"count": len(deletes)}),) if deletes else ()
    return [Finding(TOPIC, "info", cite, data, proposals)]
