"""Vitamin D prescribing checks on draft orders (order-select / order-sign only):

- `vitd-high-dose`: the daily-equivalent of all vitamin D on file and drafted (each order once,
  by id) above 4,000 IU/day without a deficiency level in the last 6 months, above 10,000 IU/day
  whatever the level, or any drafted single dose of 300,000 IU or more (contract §4).
- `vitd-ergocalciferol`: drafted ergocalciferol (D2): information, with a suggestion replacing
  it by cholecalciferol at the same IU and schedule where both can be read.
- `vitd-hypercalcemia-risk`: drafted vitamin D with hypercalcaemia, sarcoidosis or primary
  hyperparathyroidism on the problem list, or a latest serum calcium above 10.5 mg/dL.
"""

from __future__ import annotations

from ..facts.model import ConditionCategory as C
from ..facts.model import Facts, Ingredient, Medication
from ..guideline import Guideline
from . import common
from .findings import Action, Create, Delete, Finding, LabOrder, MedicationOrder, Proposal

HIGH_DOSE = "vitd-high-dose"
ERGOCALCIFEROL = "vitd-ergocalciferol"
HYPERCALCEMIA = "vitd-hypercalcemia-risk"


def _drafted_vitamin_d(facts: Facts) -> list[Medication]:
    if facts.hook == "patient-view":
        return []
    return common.vitamin_d_products(common.focus_drafts(facts))


def high_dose(facts: Facts, g: Guideline) -> Finding | None:
    drafted = _drafted_vitamin_d(facts)
    if not g.enabled(HIGH_DOSE) or not drafted:
        return None
    orders = common.vitamin_d_products(common.unique((*facts.medications, *facts.drafts)))
    total = common.daily_vitamin_d(orders)
    single_ceiling = g.dose("single_dose_ceiling_iu")
    single = [
        d
        for d in drafted
        if d.vitamin_d_iu_per_dose is not None and d.vitamin_d_iu_per_dose >= single_ceiling
    ]
    window = g.window_days("deficiency_course_months")
    deficient = common.deficient(facts, g, within_days=window)
    absolute = g.dose("absolute_ceiling_iu")
    ceiling = g.dose("no_deficiency_ceiling_iu")
    over_absolute = total > absolute
    over_ceiling = total > ceiling and not deficient
    if not (single or over_absolute or over_ceiling):
        return None
    if single:
        cite = g.doses["single_dose_ceiling_iu"].cite
    elif over_absolute:
        cite = g.doses["absolute_ceiling_iu"].cite
    else:
        cite = g.doses["no_deficiency_ceiling_iu"].cite
    level = common.latest_valid(facts, within_days=window)
    data = {
        "total": total,
        "parts": [common.describe(m) for m in orders],
        "unknown": [m.name for m in orders if m.vitamin_d_iu_per_day is None],
        "single": [common.describe(m) for m in single],
        "single_ceiling": single_ceiling,
        "over_absolute": over_absolute,
        "over_ceiling": over_ceiling,
        "absolute": absolute,
        "ceiling": ceiling,
        "deficient": deficient,
        "level_ng_ml": level.ng_ml if level else None,
        "level_date": level.when if level else None,
        "months": g.windows["deficiency_course_months"].value,
    }
    return Finding(HIGH_DOSE, "warning", cite, data)


def ergocalciferol(facts: Facts, g: Guideline) -> Finding | None:
    drafted = [d for d in _drafted_vitamin_d(facts) if d.has(Ingredient.VITAMIN_D2)]
    if not g.enabled(ERGOCALCIFEROL) or not drafted:
        return None
    actions: list[Action] = []
    replaced = []
    kept = []
    for draft in drafted:
        schedule = common.same_schedule(draft, "replace") if common.vitamin_d_only(draft) else None
        if schedule is None or draft.id is None:
            kept.append(draft.name)
            continue
        actions += [
            Delete(draft.resource_type, draft.id, draft.name),
            Create(MedicationOrder(schedule)),
        ]
        replaced.append({"name": draft.name, "dose": schedule})
    proposals = (Proposal("replace", tuple(actions), {"replaced": replaced}),) if actions else ()
    data = {"drafts": [common.describe(d) for d in drafted], "replaced": replaced, "kept": kept}
    return Finding(ERGOCALCIFEROL, "info", g.topics[ERGOCALCIFEROL].cite, data, proposals)


def hypercalcemia_risk(facts: Facts, g: Guideline) -> Finding | None:
    drafted = _drafted_vitamin_d(facts)
    if not g.enabled(HYPERCALCEMIA) or not drafted:
        return None
    conditions = [
        {"display": c.display or c.code[1], "code": c.code[1], "onset": c.onset}
        for c in facts.conditions
        if any(cat in c.categories for cat in common.HYPERCALCEMIA_RISKS)
    ]
    threshold = g.safety_value("serum_calcium_above_mg_dl")
    calcium = common.latest_calcium(facts)
    high = common.calcium_raised(facts, g)
    if not conditions and not high:
        return None
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in drafted if d.id is not None)
    check = Proposal("calcium", (Create(LabOrder("calcium", 0)),))
    proposals = ((Proposal("remove", deletes, {"count": len(deletes)}),) if deletes else ()) + (
        check,
    )
    data = {
        "drafts": [common.describe(d) for d in drafted],
        "conditions": conditions,
        "calcium": (
            {
                "mg_dl": calcium.mg_dl,
                "raw_value": calcium.raw_value,
                "raw_unit": calcium.raw_unit,
                "date": calcium.when,
                "loinc": calcium.loinc,
            }
            if calcium is not None
            else None
        ),
        "high": high,
        "threshold": threshold,
        "sarcoidosis": common.has(facts, C.SARCOIDOSIS),
        "phpt": common.has(facts, C.PRIMARY_HYPERPARATHYROIDISM),
        "hypercalcemia": common.has(facts, C.HYPERCALCEMIA),
    }
    return Finding(HYPERCALCEMIA, "warning", g.topics[HYPERCALCEMIA].cite, data, proposals)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    found = (high_dose(facts, g), ergocalciferol(facts, g), hypercalcemia_risk(facts, g))
    return [f for f in found if f]
