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
from ..facts.model import DrugClass, Facts, Ingredient, Medication
from ..guideline import Guideline
from . import common
from .findings import Action, Create, Delete, Finding, LabOrder, Proposal
from .topic import Topic
from .vitamin_d_status import level_data

HIGH_DOSE = "vitd-high-dose"
ERGOCALCIFEROL = "vitd-ergocalciferol"
HYPERCALCEMIA = "vitd-hypercalcemia-risk"
TOPICS = (
    Topic(HIGH_DOSE, safety=True),
    Topic(ERGOCALCIFEROL, safety=True),
    Topic(HYPERCALCEMIA, safety=True),
)


def _drafted_vitamin_d(facts: Facts) -> list[Medication]:
    if facts.hook == "patient-view":
        return []
    return common.vitamin_d_products(common.focus_drafts(facts))


def _drafted_analogs(facts: Facts) -> list[Medication]:
    """Drafted active vitamin D analogs and calcifediol: never vitamin D by IU, but they raise
    serum calcium (the highest risk of all, clinical.md)."""
    if facts.hook == "patient-view":
        return []
    kinds = (DrugClass.ACTIVE_VITAMIN_D_ANALOG, DrugClass.CALCIFEDIOL)
    return [d for d in common.focus_drafts(facts) if d.has(*kinds)]


def high_dose(facts: Facts, g: Guideline) -> Finding | None:
    """Each limit the drafted vitamin D crosses, most severe first (contract §4 row)."""
    drafted = _drafted_vitamin_d(facts)
    if not g.enabled(HIGH_DOSE) or not drafted:
        return None
    orders = common.vitamin_d_products(common.unique((*facts.medications, *facts.drafts)))
    total = common.daily_vitamin_d(orders)
    window = g.window_days("deficiency_course_months")
    deficient = common.deficient(facts, g, within_days=window)
    months = common.age_months(facts)
    infant = months is not None and months < 12 and not facts.pregnant
    crossed: list[dict] = []

    def cross(kind: str, limit: float, cite: str, **extra) -> None:
        crossed.append({"kind": kind, "limit": limit, "cite": cite, **extra})

    single_ceiling = g.dose("single_dose_ceiling_iu")
    single = [
        d
        for d in drafted
        if d.vitamin_d_iu_per_dose is not None and d.vitamin_d_iu_per_dose >= single_ceiling
    ]
    if single:
        cross("single", single_ceiling, g.doses["single_dose_ceiling_iu"].cite)
    absolute = "infant_absolute_ceiling_iu" if infant else "absolute_ceiling_iu"
    if total > g.dose(absolute):
        cross("absolute", g.dose(absolute), g.doses[absolute].cite, infant=infant)
    intermittent = []
    if facts.pregnant:
        intermittent = [d for d in drafted if common.intermittent(d, g)]
        if intermittent:
            cross("pregnancy-intermittent", g.dose("pregnancy_max_daily_iu"), "iom2011")
        if total > g.dose("pregnancy_max_daily_iu") and not any(
            c["kind"] == "absolute" for c in crossed
        ):
            cross(
                "pregnancy-total",
                g.dose("pregnancy_max_daily_iu"),
                g.doses["pregnancy_max_daily_iu"].cite,
            )
    limit = common.upper_limit(facts, g)
    if limit is None:  # no birthDate: the limit of ages 9 and over still applies
        ceiling = g.doses["no_deficiency_ceiling_iu"]
        limit = (ceiling.value, "age unknown", ceiling.cite)
    ul, ages, ul_cite = limit
    if total > ul and not deficient and not crossed:
        cross("upper-limit", ul, ul_cite, ages=ages)
    if not crossed:
        return None
    level = common.latest_valid(facts, within_days=window)
    for item in crossed:
        item["source"] = g.citation(item["cite"]).label
    data = {
        "total": total,
        "parts": [common.describe(m) for m in orders],
        "unknown": [m.name for m in orders if m.vitamin_d_iu_per_day is None],
        "single": [common.describe(m) for m in single],
        "intermittent": [common.describe(m) for m in intermittent],
        "crossed": crossed,
        "first": crossed[0],
        "pregnant": facts.pregnant,
        "deficient": deficient,
        "level": level_data(level) if level else None,
        "months": g.windows["deficiency_course_months"].value,
    }
    return Finding(
        HIGH_DOSE,
        "warning",
        crossed[0]["cite"],
        data,
        _pregnancy_course(facts, g, intermittent, deficient),
    )


def _pregnancy_course(
    facts: Facts, g: Guideline, intermittent: list[Medication], deficient: bool
) -> tuple[Proposal, ...]:
    """A deficient pregnant patient with an intermittent draft: the pregnancy regimen's daily
    course in its place (created first, the draft deleted last)."""
    replace = [d for d in intermittent if d.id is not None and common.vitamin_d_only(d)]
    if not (facts.pregnant and deficient and replace):
        return ()
    course = g.regimens["pregnancy"].courses[0]
    order = common.order_for(facts, g, course)
    if order is None:
        return ()
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in replace)
    return (Proposal("pregnancy-course", (Create(order), *deletes), {"course": course}),)



def ergocalciferol(facts: Facts, g: Guideline) -> Finding | None:
    drafted = [d for d in _drafted_vitamin_d(facts) if d.has(Ingredient.VITAMIN_D2)]
    if not g.enabled(ERGOCALCIFEROL) or not drafted:
        return None
    actions: list[Action] = []
    replaced = []
    kept = []
    deletes: list[Action] = []
    for draft in drafted:
        schedule = common.same_schedule(draft, "replace") if common.vitamin_d_only(draft) else None
        order = common.order_for(facts, g, schedule) if schedule is not None else None
        if order is None or draft.id is None:
            kept.append(draft.name)
            continue
        actions.append(Create(order))  # creates first, deletes last (the sandbox applies
        deletes.append(Delete(draft.resource_type, draft.id, draft.name))  # only the first)
        replaced.append({"name": draft.name, "dose": schedule})
    actions += deletes
    proposals = (Proposal("replace", tuple(actions), {"replaced": replaced}),) if actions else ()
    data = {"drafts": [common.describe(d) for d in drafted], "replaced": replaced, "kept": kept}
    return Finding(ERGOCALCIFEROL, "info", g.topics[ERGOCALCIFEROL].cite, data, proposals)


def hypercalcemia_risk(facts: Facts, g: Guideline) -> Finding | None:
    """Drafted vitamin D or an active analog / calcifediol with a raised calcium or
    hypercalcaemia (hold it and explain the calcium first), or with sarcoidosis / primary
    hyperparathyroidism alone (monitor)."""
    drafted = _drafted_vitamin_d(facts) + _drafted_analogs(facts)
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
    raised = high or common.has(facts, C.HYPERCALCEMIA)
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in drafted if d.id is not None)
    if raised:
        workup = (Create(LabOrder("pth", 0)), Create(LabOrder("creatinine", 0)))
        proposals: tuple[Proposal, ...] = tuple(
            Proposal(
                key,
                (Create(LabOrder(lab, 0)), *workup, *deletes),
                {"removes": bool(deletes)},
            )
            for key, lab in (
                ("hold-adjusted", "calcium-albumin-adjusted"),
                ("hold-ionised", "calcium-ionised"),
            )
        )
        cite = "hypercalcaemia-workup"
    else:
        monitor = (Create(LabOrder("calcium", 0)), Create(LabOrder("vitamin-d-25oh", 0)))
        proposals = (Proposal("monitor", monitor),)
        cite = g.topics[HYPERCALCEMIA].cite
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
        "raised": raised,
        "threshold": threshold,
        "sarcoidosis": common.has(facts, C.SARCOIDOSIS),
        "phpt": common.has(facts, C.PRIMARY_HYPERPARATHYROIDISM),
        "hypercalcemia": common.has(facts, C.HYPERCALCEMIA),
    }
    return Finding(HYPERCALCEMIA, "warning", cite, data, proposals)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    found = (high_dose(facts, g), ergocalciferol(facts, g), hypercalcemia_risk(facts, g))
    return [f for f in found if f]
