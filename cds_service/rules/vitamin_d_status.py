"""Vitamin D status from the latest 25(OH)D: deficiency, insufficiency, high level, or a result
that cannot be read. Topics `vitd-deficiency`, `vitd-insufficiency`, `vitd-high-level`,
`vitd-level-uninterpretable` (contract §4).

patient-view: a card for the status itself, with correction regimens for a deficiency.
order-select / order-sign: only where a drafted vitamin D order makes the status relevant: a
draft that under-treats a deficiency (replace it by the correction course), or any vitamin D
drafted for a high level (remove it).
"""

from __future__ import annotations

from ..facts.model import Facts, Medication, VitaminDLevel
from ..guideline import Guideline, Regimen, Schedule
from . import common
from .findings import Create, Delete, Finding, LabOrder, MedicationOrder, Proposal


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
    regimen: Regimen, g: Guideline, replace: tuple[Medication, ...] = ()
) -> tuple[Proposal, ...]:
    """Each course with its maintenance and a repeat level, as one suggestion per course."""
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in replace if d.id is not None)
    repeat = LabOrder("vitamin-d-25oh", round(g.window_days("repeat_level_months")))
    return tuple(
        Proposal(
            key=course.key,
            actions=(
                *deletes,
                Create(MedicationOrder(course)),
                Create(MedicationOrder(regimen.maintenance, starts_after_weeks=course.weeks)),
                Create(repeat),
            ),
            data={"course": course, "maintenance": regimen.maintenance, "replaces": bool(deletes)},
        )
        for course in regimen.courses
    )


def _deficiency(facts: Facts, g: Guideline, level: VitaminDLevel) -> Finding | None:
    regimen = common.regimen(facts, g)
    active_iu = common.daily_vitamin_d(facts.medications)
    data = {
        "level": level_data(level),
        "band": common.band(facts, g),
        "regimen": regimen,
        "active_iu": active_iu,
        "active": common.describe_all(common.vitamin_d_products(facts.medications)),
        "threshold": g.level("deficiency_below_ng_ml"),
        "draft": None,
        "draft_iu": None,
        "already_treating": False,
        "calcium_watch": common.needs_calcium_watch(facts, g),
    }
    if facts.hook == "patient-view":
        if regimen is None or data["calcium_watch"]:
            proposals: tuple[Proposal, ...] = ()  # no birthDate, or vitamin D needs calcium watch
        elif active_iu >= min(c.daily_iu for c in regimen.courses):
            proposals = ()  # a correction-strength dose is already on file: never stack it
            data["already_treating"] = True
        else:
            proposals = regimen_proposals(regimen, g)
        return Finding(
            "vitd-deficiency", "warning", g.topics["vitd-deficiency"].cite, data, proposals
        )

    if regimen is None or data["calcium_watch"]:
        return None  # vitd-hypercalcemia-risk speaks for the draft
    loading = min(c.daily_iu for c in regimen.courses)
    drafts = common.vitamin_d_products(common.focus_drafts(facts))
    under = [d for d in drafts if d.vitamin_d_iu_per_day is not None]
    if not under or common.daily_vitamin_d(under) + active_iu >= loading:
        return None
    replace = tuple(d for d in under if common.vitamin_d_only(d))
    data["draft"] = common.describe_all(under)
    data["draft_iu"] = common.daily_vitamin_d(under)
    return Finding(
        "vitd-deficiency",
        "warning",
        g.topics["vitd-deficiency"].cite,
        data,
        regimen_proposals(regimen, g, replace),
    )


def _insufficiency(facts: Facts, g: Guideline, level: VitaminDLevel) -> Finding | None:
    if facts.hook != "patient-view":
        return None
    active_iu = common.daily_vitamin_d(facts.medications)
    band = common.band(facts, g)
    dose = Schedule(int(g.dose("insufficiency_daily_iu")), "d", key="daily")
    proposals: tuple[Proposal, ...] = ()
    calcium_watch = common.needs_calcium_watch(facts, g)
    if band in ("adult", "pregnancy") and active_iu < dose.daily_iu and not calcium_watch:
        proposals = (Proposal("daily", (Create(MedicationOrder(dose)),), {"dose": dose}),)
    data = {
        "level": level_data(level),
        "band": band,
        "active_iu": active_iu,
        "dose": dose,
        "calcium_watch": calcium_watch,
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
    proposals = [Proposal("calcium", (*deletes, check_calcium), {"removes": bool(deletes)})]
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
