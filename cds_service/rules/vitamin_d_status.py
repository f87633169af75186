"""Vitamin D status from the latest 25(OH)D: deficiency, insufficiency, high level, or a result
that cannot be read. Topics `vitd-deficiency`, `vitd-insufficiency`, `vitd-high-level`,
`vitd-level-uninterpretable` (contract §4).

patient-view: a card for the status itself, with correction regimens for a deficiency.
order-select / order-sign: only where a drafted vitamin D order makes the status relevant: a
draft that under-treats a deficiency (replace it by the correction course), or any vitamin D
drafted for a high level (remove it).
"""

from __future__ import annotations

from datetime import timedelta

from ..facts.model import ConditionCategory as C
from ..facts.model import DrugClass, Facts, Medication, VitaminDLevel
from ..guideline import Guideline, Regimen, Schedule
from . import common
from .findings import Create, Delete, Finding, LabOrder, Proposal
from .topic import Topic

TOPICS = (
    Topic("vitd-deficiency"),
    Topic("vitd-insufficiency"),
    Topic("vitd-high-level"),
    Topic("vitd-level-uninterpretable"),
)


def level_data(level: VitaminDLevel) -> dict:
    return {
        "ng_ml": level.ng_ml,
        "comparator": level.comparator,
        "raw_value": level.raw_value,
        "raw_unit": level.raw_unit,
        "date": level.when,
        "loinc": level.loinc,
    }


def regimen_proposals(
    facts: Facts, regimen: Regimen, g: Guideline, replace: tuple[Medication, ...] = ()
) -> tuple[Proposal, ...]:
    """Each course with its maintenance and a repeat level, as one suggestion per course.

    Only orders a product gives exactly (`common.order_for`); no maintenance order when vitamin D
    is already on file (the card names it: never a second, duplicate order); a replaced draft is
    deleted after the new order is created (create first: the sandbox applies only the first
    action). With no orderable course (oral drops for children under 4 have no verified
    product), one suggestion orders the repeat level and the card names the regimen.
    """
    def follow_up(course_weeks: int | None) -> Create:
        if regimen.follow_up_weeks_after_course is not None and course_weeks is not None:
            days = 7 * (course_weeks + regimen.follow_up_weeks_after_course)
        else:
            days = round(g.window_days("repeat_level_months"))
        return Create(LabOrder(regimen.follow_up_lab, days))

    on_file = common.vitamin_d_products(facts.medications)
    proposals = []
    for course in regimen.courses:
        order = common.order_for(facts, g, course)
        if order is None:
            continue
        repeat = follow_up(course.weeks)
        maintenance = None
        if not on_file:
            maintenance = common.order_for(
                facts,
                g,
                regimen.maintenance,
                starts_after_weeks=(course.weeks or 0) + regimen.maintenance_gap_weeks,
            )
        deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in replace if d.id is not None)
        actions = (
            Create(order),
            *((Create(maintenance),) if maintenance else ()),
            repeat,
            *deletes,
        )
        proposals.append(
            Proposal(
                key=course.key,
                actions=actions,
                data={
                    "course": course,
                    "maintenance": regimen.maintenance if maintenance else None,
                    "replaces": bool(deletes),
                },
            )
        )
    if not proposals:
        repeat = follow_up(regimen.courses[0].weeks)
        proposals.append(
            Proposal("recheck", (repeat,), {"months": g.windows["repeat_level_months"].value})
        )
    return tuple(proposals)


def course_under_way(facts: Facts, g: Guideline, regimen: Regimen | None) -> dict | None:
    """An active vitamin D order or statement at correction strength (at least the smallest
    course's daily-equivalent): what it is, when it started and when to re-check the level."""
    loading = min(c.daily_iu for c in regimen.courses) if regimen else None
    if loading is None:
        return None
    for med in common.vitamin_d_products(facts.medications):
        if med.vitamin_d_iu_per_day is not None and med.vitamin_d_iu_per_day >= loading - 1e-6:
            started = med.started or med.authored
            recheck = (
                started + timedelta(days=g.window_days("repeat_level_months")) if started else None
            )
            return {**common.describe(med), "started": started, "recheck": recheck}
    return None


def _context(facts: Facts, g: Guideline, level: VitaminDLevel) -> dict:
    """What every status card names: the level and the vitamin D and history on file."""
    on_file = common.vitamin_d_products(facts.medications)
    return {
        "level": level_data(level),
        "band": common.band(facts, g),
        "form": common.dose_form(facts, g),
        "active_iu": common.daily_vitamin_d(facts.medications),
        "on_file": common.describe_all(on_file),
        "stones": [
            {"display": c.display or c.code[1], "code": c.code[1], "onset": c.onset}
            for c in facts.conditions
            if C.NEPHROLITHIASIS in c.categories
        ],
        "calcium_watch": common.needs_calcium_watch(facts, g),
        "higher_need": common.higher_need(facts, g),
    }


def _deficiency(facts: Facts, g: Guideline, level: VitaminDLevel) -> Finding | None:
    regimen = common.regimen(facts, g)
    cited = g.levels["deficiency_below_ng_ml"]
    data = {
        **_context(facts, g, level),
        "regimen": regimen,
        "threshold": cited.value,
        "threshold_source": g.citation(cited.cite).short,
        "no_threshold_profile": g.profile == "es2024",
        "draft": None,
        "draft_iu": None,
        "course": None,
    }
    cite = g.topics["vitd-deficiency"].cite
    if facts.hook == "patient-view":
        course = course_under_way(facts, g, regimen)
        if course is not None:
            data["course"] = course  # a correction course is under way: information only
            return Finding("vitd-deficiency", "info", cite, data)
        if regimen is not None and not regimen.offered:
            return Finding("vitd-deficiency", "info", cite, data)  # e.g. NICE CKS: adults only
        if regimen is None or data["calcium_watch"]:
            proposals: tuple[Proposal, ...] = ()  # no birthDate, or vitamin D needs calcium watch
        else:
            proposals = regimen_proposals(facts, regimen, g)
        return Finding("vitd-deficiency", "warning", cite, data, proposals)

    if regimen is None or data["calcium_watch"] or not regimen.offered:
        return None  # vitd-hypercalcemia-risk speaks for the draft
    loading = min(c.daily_iu for c in regimen.courses)
    drafts = common.vitamin_d_products(common.focus_drafts(facts))
    under = [d for d in drafts if d.vitamin_d_iu_per_day is not None]
    if not under or common.daily_vitamin_d(under) + data["active_iu"] >= loading:
        return None
    replace = tuple(d for d in under if common.vitamin_d_only(d))
    data["draft"] = common.describe_all(under)
    data["draft_iu"] = common.daily_vitamin_d(under)
    return Finding(
        "vitd-deficiency", "warning", cite, data, regimen_proposals(facts, regimen, g, replace)
    )


def insufficiency_risk(facts: Facts) -> list[str]:
    """Risk factors that call for 800-2,000 IU daily at an insufficient level (NICE CKS):
    osteoporosis or a fragility fracture, antiresorptive treatment, an anticonvulsant or other
    vitamin-D-lowering medicine or a systemic glucocorticoid, malabsorption."""
    found = []
    if common.has(facts, C.OSTEOPOROSIS, C.FRAGILITY_FRACTURE):
        found.append("osteoporosis or fragility fracture")
    if any(m.has(DrugClass.ANTIRESORPTIVE) for m in facts.medications):
        found.append("antiresorptive treatment")
    lowering = (DrugClass.LOWERS_VITAMIN_D, DrugClass.SYSTEMIC_GLUCOCORTICOID)
    if any(m.has(*lowering) for m in facts.medications):
        found.append("an anticonvulsant or glucocorticoid")
    if common.has(facts, C.MALABSORPTION):
        found.append("malabsorption")
    return found


def _insufficiency(facts: Facts, g: Guideline, level: VitaminDLevel) -> Finding | None:
    if facts.hook != "patient-view":
        return None
    context = _context(facts, g, level)
    higher = context["band"] == "higher_need"
    risk = insufficiency_risk(facts)
    if higher:
        daily = g.higher_need["insufficiency_daily_iu"]
    elif risk:
        daily = g.doses["insufficiency_daily_iu"]
    else:
        daily = g.doses["insufficiency_no_risk_daily_iu"]
    dose = Schedule(int(daily.value), "d", key="daily")
    proposals: tuple[Proposal, ...] = ()
    order = common.order_for(facts, g, dose)
    wanted = (
        context["band"] in ("adult", "higher_need", "pregnancy")
        and context["active_iu"] < dose.daily_iu
        and not context["calcium_watch"]
        and not any(common.duplicates(m, dose) for m in facts.medications)
    )
    if wanted and order is not None:
        proposals = (Proposal("daily", (Create(order),), {"dose": dose}),)
    data = {
        **context,
        "dose": dose,
        "risk": risk,
        "by_risk": g.dose("insufficiency_daily_iu") != g.dose("insufficiency_no_risk_daily_iu"),
        "dose_source": g.citation(daily.cite).short,
        "threshold_low": g.level("deficiency_below_ng_ml"),
        "threshold": g.level("insufficiency_below_ng_ml"),
    }
    return Finding(
        "vitd-insufficiency", "info", g.topics["vitd-insufficiency"].cite, data, proposals
    )


def _high(facts: Facts, g: Guideline, level: VitaminDLevel) -> Finding | None:
    critical = common.above(level, g.level("critical_above_ng_ml"))
    drafts = common.vitamin_d_products(common.focus_drafts(facts))
    if facts.hook != "patient-view" and not drafts:
        return None
    check_calcium = Create(LabOrder("calcium", 0))
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in drafts if d.id is not None)
    proposals = [Proposal("calcium", (check_calcium, *deletes), {"removes": bool(deletes)})]
    data = {
        "level": level_data(level),
        "critical": critical,
        "threshold": g.level("critical_above_ng_ml" if critical else "high_above_ng_ml"),
        "active": common.describe_all(common.vitamin_d_products(facts.medications)),
        "draft": common.describe_all(drafts),
    }
    return Finding(
        "vitd-high-level",
        "critical" if critical else "warning",
        g.topics["vitd-high-level"].cite,
        data,
        tuple(proposals),
    )


def _uninterpretable(facts: Facts, g: Guideline, latest: VitaminDLevel) -> Finding | None:
    if facts.hook != "patient-view":
        return None
    if not common.recent(facts, latest, g.window_days("status_level_months")):
        return None
    earlier = common.latest_valid(facts)
    data = {"level": level_data(latest), "earlier": level_data(earlier) if earlier else None}
    return Finding(
        "vitd-level-uninterpretable",
        "info",
        g.topics["vitd-level-uninterpretable"].cite,
        data,
    )


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    latest = common.latest_result(facts)
    if latest is None:
        return []
    if not latest.interpretable:
        # No dosing on a result nobody can read, even if an older valid level exists.
        enabled = g.enabled("vitd-level-uninterpretable")
        found = _uninterpretable(facts, g, latest) if enabled else None
        return [found] if found else []
    level = common.current_level(facts, g)
    if level is None:
        return []
    if common.above(level, g.level("high_above_ng_ml")):
        found = _high(facts, g, level) if g.enabled("vitd-high-level") else None
    elif common.below(level, g.level("deficiency_below_ng_ml")):
        found = _deficiency(facts, g, level) if g.enabled("vitd-deficiency") else None
    elif common.below(level, g.level("insufficiency_below_ng_ml")):
        found = _insufficiency(facts, g, level) if g.enabled("vitd-insufficiency") else None
    else:
        found = None
    return [found] if found else []
