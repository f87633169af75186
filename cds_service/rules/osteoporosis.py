"""Osteoporosis: calcium + vitamin D (`osteoporosis-calcium-vitd`) and the K2 question
(`k2-consideration`).

- osteoporosis-calcium-vitd: active osteoporosis and vitamin D < 800 IU/day daily-equivalent.
  On order hooks only when vitamin D is drafted and the total with the draft stays < 800. No
  vitamin D suggestion while the level is deficient (the deficiency card carries the regimen).
- k2-consideration (patient-view): osteoporosis already on >= 800 IU/day vitamin D and calcium,
  or long-term vitamin D > 4,000 IU/day (a time-limited correction course does not count); never
  with any VKA, nor when a vitamin K product is on file.
  Not with a high 25(OH)D either. Information only: no order is suggested.
"""

from __future__ import annotations

import math

from ..facts.model import ConditionCategory as C
from ..facts.model import Facts, Ingredient
from ..guideline import Guideline, Schedule
from . import common
from .findings import Create, Finding, Proposal
from .topic import Topic

TOPICS = (Topic("osteoporosis-calcium-vitd"), Topic("k2-consideration"))

STEP_IU = 400  # the smallest tablet suggested (cholecalciferol 400 IU)


def _calcium_vitamin_d(facts: Facts, g: Guideline) -> Finding | None:
    topic = "osteoporosis-calcium-vitd"
    if not g.enabled(topic) or not common.has(facts, C.OSTEOPOROSIS):
        return None
    minimum = g.dose("osteoporosis_min_daily_iu")
    drafts = common.vitamin_d_products(common.focus_drafts(facts))
    if facts.hook != "patient-view" and not drafts:
        return None
    daily_iu = common.daily_vitamin_d((*facts.medications, *drafts))
    if daily_iu >= minimum:
        return None
    deficient = common.deficient(facts, g)
    calcium_watch = common.needs_calcium_watch(facts, g)
    proposals: tuple[Proposal, ...] = ()
    if not deficient and not calcium_watch:
        add = Schedule(int(math.ceil((minimum - daily_iu) / STEP_IU) * STEP_IU), "d", key="add")
        order = common.order_for(facts, g, add)
        if order is not None:
            proposals = (Proposal("add", (Create(order),), {"dose": add}),)
    data = {
        "daily_iu": daily_iu,
        "minimum": minimum,
        "calcium_mg": common.daily_calcium(facts.medications),
        "deficient": deficient,
        "calcium_watch": calcium_watch,
        "products": common.describe_all(common.vitamin_d_products((*facts.medications, *drafts))),
    }
    return Finding(topic, "info", g.topics[topic].cite, data, proposals)


def _k2(facts: Facts, g: Guideline) -> Finding | None:
    topic = "k2-consideration"
    if not g.enabled(topic) or facts.hook != "patient-view" or common.on_vka(facts):
        return None
    if any(m.has_vitamin_k for m in facts.medications):
        return None
    level = common.current_level(facts, g)
    if level is not None and common.above(level, g.level("high_above_ng_ml")):
        return None  # the high-level card says hold vitamin D; adding K2 is not the question
    daily_iu = common.daily_vitamin_d(facts.medications)
    on_calcium = any(m.has(Ingredient.CALCIUM) for m in facts.medications)
    established = (
        common.has(facts, C.OSTEOPOROSIS)
        and daily_iu >= g.dose("k2_min_vitamin_d_iu")
        and on_calcium
    )
    # A time-limited course (boundsDuration or a count of doses: a deficiency correction) is not
    # long-term vitamin D: only open-ended use counts towards the high-dose reason.
    long_term = [m for m in facts.medications if m.course_days is None]
    high_dose = common.daily_vitamin_d(long_term) > g.dose("risk_daily_iu_above")
    if not (established or high_dose):
        return None
    data = {"daily_iu": daily_iu, "established": established, "high_dose": high_dose}
    return Finding(topic, "info", g.topics[topic].cite, data)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    return [f for f in (_calcium_vitamin_d(facts, g), _k2(facts, g)) if f]
