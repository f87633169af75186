"""`vitd-no-recent-level`: a risk indication and no valid 25(OH)D in the last 12 months.

Risk indications (contract §4): osteoporosis or osteopenia, age >= 65 with a fall history,
CKD stage 3-5, malabsorption, vitamin D > 4,000 IU/day, and for adults obesity or an active
medication that lowers 25(OH)D (ES 2011 recommendation 4.2). Never for people without one.
patient-view: active vitamin D counts; order hooks: only when vitamin D is drafted, and the
draft counts towards the dose.
"""

from __future__ import annotations

from ..facts.model import ConditionCategory as C
from ..facts.model import Facts
from ..guideline import Guideline
from . import common
from .findings import Create, Finding, LabOrder, Proposal
from .topic import Topic

TOPIC = "vitd-no-recent-level"
TOPICS = (Topic(TOPIC),)


def indications(facts: Facts, g: Guideline, daily_iu: float) -> list[str]:
    found = []
    if common.has(facts, C.OSTEOPOROSIS):
        found.append("osteoporosis")
    if common.has(facts, C.OSTEOPENIA):
        found.append("osteopenia")
    age = facts.patient.age_years if facts.patient else None
    if age is not None and age >= g.age("older_adult_years") and common.has(facts, C.FALLS):
        found.append("older-with-falls")
    if common.has(facts, C.CKD_3_5):
        found.append("ckd")
    if common.has(facts, C.MALABSORPTION):
        found.append("malabsorption")
    if daily_iu > g.dose("risk_daily_iu_above"):
        found.append("high-dose")
    adult = age is not None and age >= g.age("adult_from_years")
    kinds = {r["kind"] for r in common.higher_need(facts, g)} if adult else set()
    if kinds & {"bmi", "obesity"}:
        found.append("obesity")
    if "medication" in kinds:
        found.append("lowers-vitamin-d")
    return found


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC):
        return []
    drafts = common.vitamin_d_products(common.focus_drafts(facts))
    if facts.hook != "patient-view" and not drafts:
        return []
    daily_iu = common.daily_vitamin_d((*facts.medications, *drafts))
    reasons = indications(facts, g, daily_iu)
    if not reasons:
        return []
    if common.latest_valid(facts, within_days=g.window_days("recent_level_months")):
        return []
    last = common.latest_valid(facts)
    data = {
        "reasons": reasons,
        "daily_iu": daily_iu,
        "last_date": last.when if last else None,
        "months": g.windows["recent_level_months"].value,
    }
    order = Proposal("order-level", (Create(LabOrder("vitamin-d-25oh", 0)),))
    return [Finding(TOPIC, "info", g.topics[TOPIC].cite, data, (order,))]
