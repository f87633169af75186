"""Facts the rules share, derived without I/O: latest level, age band, totals of current doses."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from ..facts.model import (
    CalciumLevel,
    ConditionCategory,
    DrugClass,
    Facts,
    Ingredient,
    Medication,
    MedicationSource,
    VitaminDLevel,
)
from ..guideline import Guideline, Regimen, Schedule
from ..products import for_dose
from .findings import MedicationOrder

LOWER = frozenset({"<", "<="})
UPPER = frozenset({">", ">="})


def below(level: VitaminDLevel, threshold: float) -> bool:
    """Level < threshold; a result "<20" counts as below 20 (contract §5)."""
    assert level.ng_ml is not None
    if level.comparator in LOWER:
        return level.ng_ml <= threshold
    return level.ng_ml < threshold


def above(level: VitaminDLevel, threshold: float) -> bool:
    """Level > threshold; a result ">150" counts as above 150."""
    assert level.ng_ml is not None
    if level.comparator == ">":
        return level.ng_ml >= threshold
    return level.ng_ml > threshold


def latest_result(facts: Facts) -> VitaminDLevel | None:
    """The most recent 25(OH)D result, interpretable or not (levels are newest first)."""
    return facts.vitamin_d_levels[0] if facts.vitamin_d_levels else None


def latest_valid(facts: Facts, *, within_days: float | None = None) -> VitaminDLevel | None:
    for level in facts.vitamin_d_levels:
        if not level.interpretable:
            continue
        if within_days is not None and not recent(facts, level, within_days):
            return None
        return level
    return None


def recent(facts: Facts, level: VitaminDLevel, within_days: float) -> bool:
    return level.when is not None and facts.now - level.when <= timedelta(days=within_days)


def current_level(facts: Facts, g: Guideline) -> VitaminDLevel | None:
    """The level a status card may be based on: the newest result, if it is valid and recent."""
    latest = latest_result(facts)
    if latest is None or not latest.interpretable:
        return None
    if not recent(facts, latest, g.window_days("status_level_months")):
        return None
    return latest


def deficient(facts: Facts, g: Guideline, *, within_days: float | None = None) -> bool:
    """A valid deficient level (the newest valid one within the window)."""
    window = within_days if within_days is not None else g.window_days("status_level_months")
    level = latest_valid(facts, within_days=window)
    return level is not None and below(level, g.level("deficiency_below_ng_ml"))


def band(facts: Facts, g: Guideline) -> str | None:
    """Regimen band: pregnancy, infant, child or adult; None without a birthDate."""
    if facts.pregnant:
        return "pregnancy"
    patient = facts.patient
    if patient is None or patient.age_years is None:
        return None
    if patient.age_years < g.age("child_from_years"):
        return "infant"
    if patient.age_years < g.age("adult_from_years"):
        return "child"
    if g.higher_need_regimens and higher_need_adult(facts, g):
        return "higher_need"
    return "adult"


def age_months(facts: Facts) -> int | None:
    """Whole months of age at the hook's time; None without a birthDate."""
    patient = facts.patient
    if patient is None or patient.birth_date is None:
        return None
    born, today = patient.birth_date, facts.now.date()
    return (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)


def upper_limit(facts: Facts, g: Guideline) -> tuple[float, str, str] | None:
    """The tolerable upper intake level of the patient's age: (IU/day, ages, citation key).
    From 9 years (and in pregnancy) `no_deficiency_ceiling_iu`; None without a birthDate."""
    months = age_months(facts)
    if months is None and not facts.pregnant:
        return None
    if months is not None and not facts.pregnant:
        for limit in g.upper_limits:
            if months < limit.below_months:
                return limit.iu, limit.ages, limit.cite
    if higher_need_adult(facts, g):
        raised = g.higher_need["ceiling_iu"]
        return raised.value, "adults with a higher need", raised.cite
    ceiling = g.doses["no_deficiency_ceiling_iu"]
    return ceiling.value, "ages 9 years and over", ceiling.cite


def interval_days(med: Medication) -> float | None:
    """Days between two administrations of the product's vitamin D (7 for once weekly);
    None when the dose or the schedule cannot be read."""
    dose, daily = med.vitamin_d_iu_per_dose, med.vitamin_d_iu_per_day
    if not dose or not daily:
        return None
    return dose / daily


def intermittent(med: Medication, g: Guideline) -> bool:
    """A weekly-or-rarer dose, a single (bolus) dose, or a dose above the pregnancy daily
    ceiling given less often than daily: not the daily dosing pregnancy calls for."""
    if med.timing is not None and med.timing.count == 1 and med.vitamin_d_iu_per_dose:
        return True
    days = interval_days(med)
    if days is None:
        return False
    dose = med.vitamin_d_iu_per_dose or 0.0
    return days >= 7 - 1e-9 or (days > 1 + 1e-9 and dose > g.dose("pregnancy_max_daily_iu"))


def dose_form(facts: Facts, g: Guideline) -> str:
    """ "liquid" (oral drops) for children under 4, else "solid" (tablets, capsules)."""
    months = age_months(facts)
    if months is not None and months < 12 * g.age("liquid_below_years") and not facts.pregnant:
        return "liquid"
    return "solid"


def order_for(facts: Facts, g: Guideline, schedule: Schedule, **kw) -> MedicationOrder | None:
    """A cholecalciferol order for `schedule` in the patient's dose form, when a product gives
    the dose exactly (contract §4 "Suggested orders"); None when none does."""
    form = dose_form(facts, g)
    if for_dose(schedule.dose_iu, form) is None:
        return None
    return MedicationOrder(schedule, form=form, **kw)


def duplicates(med: Medication, schedule: Schedule) -> bool:
    """An active plain vitamin D order already gives this dose on this schedule."""
    if not vitamin_d_only(med) or med.vitamin_d_iu_per_dose is None:
        return False
    same_daily = (
        med.vitamin_d_iu_per_day is not None
        and abs(med.vitamin_d_iu_per_day - schedule.daily_iu) < 1e-6
    )
    return abs(med.vitamin_d_iu_per_dose - schedule.dose_iu) < 1e-6 and same_daily


def higher_need(facts: Facts, g: Guideline) -> list[dict]:
    """Why this patient needs more vitamin D (ES 2011 recommendation 4.2), each reason with what
    the card names: a recent BMI at or above the obesity threshold (value and date), an active
    obesity or malabsorption condition, an active medication that lowers 25(OH)D."""
    reasons: list[dict] = []
    window = g.higher_need["bmi_months"].value * 365.25 / 12
    bmi = next((b for b in facts.bmi_levels if b.kg_m2 is not None), None)
    if (
        bmi is not None
        and bmi.when is not None
        and facts.now - bmi.when <= timedelta(days=window)
        and bmi.kg_m2 is not None
        and bmi.kg_m2 >= g.higher_need["bmi_from"].value
    ):
        reasons.append({"kind": "bmi", "kg_m2": bmi.kg_m2, "date": bmi.when})
    for condition in facts.conditions:
        for category in (ConditionCategory.OBESITY, ConditionCategory.MALABSORPTION):
            if category in condition.categories:
                reasons.append(
                    {
                        "kind": category.value,
                        "display": condition.display or condition.code[1],
                        "code": condition.code[1],
                    }
                )
    for med in facts.medications:
        if med.has(DrugClass.LOWERS_VITAMIN_D, DrugClass.SYSTEMIC_GLUCOCORTICOID):
            reasons.append({"kind": "medication", "name": med.name, "dosage": med.dosage_text})
    return reasons


def higher_need_adult(facts: Facts, g: Guideline) -> bool:
    """An adult (>= 19, not pregnant) with a higher need."""
    age = facts.patient.age_years if facts.patient else None
    if age is None or facts.pregnant or age < g.age("adult_from_years"):
        return False
    return bool(higher_need(facts, g))


def regimen(facts: Facts, g: Guideline) -> Regimen | None:
    name = band(facts, g)
    return g.regimens[name] if name else None


def daily_vitamin_d(meds: Iterable[Medication]) -> float:
    """Total daily-equivalent IU of vitamin D; products whose dose is unknown add nothing."""
    return sum(m.vitamin_d_iu_per_day or 0.0 for m in meds if m.has_vitamin_d)


def daily_calcium(meds: Iterable[Medication]) -> float:
    return sum(m.calcium_mg_per_day or 0.0 for m in meds if m.has(Ingredient.CALCIUM))


def vitamin_d_products(meds: Iterable[Medication]) -> list[Medication]:
    return [m for m in meds if m.has_vitamin_d]


def focus_drafts(facts: Facts) -> tuple[Medication, ...]:
    """Drafts the hook asks about: the selected ones on order-select (none when the selections
    name none of them), all on order-sign."""
    if facts.hook != "order-select":
        return facts.drafts
    chosen = {s.split("/", 1)[-1] for s in facts.selections}
    # contract §5: only those named in `selections`, never every draft when none matches
    return tuple(d for d in facts.drafts if d.id is not None and d.id in chosen)


def on_vka(facts: Facts) -> bool:
    return any(m.has(DrugClass.VKA) for m in (*facts.medications, *facts.drafts))


def has(facts: Facts, *categories: ConditionCategory) -> bool:
    return any(c in facts.categories for c in categories)


# Vitamin D raises serum calcium further in these (contract §4, vitd-hypercalcemia-risk).
HYPERCALCEMIA_RISKS = (
    ConditionCategory.HYPERCALCEMIA,
    ConditionCategory.SARCOIDOSIS,
    ConditionCategory.PRIMARY_HYPERPARATHYROIDISM,
)


def latest_calcium(facts: Facts) -> CalciumLevel | None:
    """The newest readable serum calcium."""
    return next((c for c in facts.calcium_levels if c.mg_dl is not None), None)


def calcium_raised(facts: Facts, g: Guideline) -> bool:
    calcium = latest_calcium(facts)
    threshold = g.safety_value("serum_calcium_above_mg_dl")
    return calcium is not None and calcium.mg_dl is not None and calcium.mg_dl > threshold


def needs_calcium_watch(facts: Facts, g: Guideline) -> bool:
    """Vitamin D only with serum calcium monitoring: no dose is pre-filled for these patients."""
    return has(facts, *HYPERCALCEMIA_RISKS) or calcium_raised(facts, g)


def vitamin_d_only(med: Medication) -> bool:
    """A plain vitamin D product (nothing else recognised in it)."""
    return (
        bool(med.ingredients)
        and not med.classes
        and all(i.is_vitamin_d for i in med.ingredients)
    )


def describe(med: Medication) -> dict:
    """What a card says about one product: name, code, where it is on file, its doses."""
    return {
        "name": med.name,
        "code": product_code(med),
        "draft": med.source is MedicationSource.DRAFT,
        "statement": med.source is MedicationSource.STATEMENT,
        "daily_iu": med.vitamin_d_iu_per_day,
        "dose_iu": med.vitamin_d_iu_per_dose if med.has_vitamin_d else None,
        "k_ug_per_dose": med.vitamin_k_ug_per_dose,
        "k_ug_per_day": med.vitamin_k_ug_per_day,
        "calcium": med.has(Ingredient.CALCIUM),
    }


def describe_all(meds: Iterable[Medication]) -> list[dict]:
    return [describe(m) for m in meds]


def same_schedule(med: Medication, key: str) -> Schedule | None:
    """Plain cholecalciferol at `med`'s vitamin D dose and schedule, when both are known."""
    timing = med.timing
    dose = med.vitamin_d_iu_per_dose
    if timing is None or dose is None or dose <= 0 or abs(dose - round(dose)) > 1e-6:
        return None
    weeks = None
    duration = None
    if timing.bounds is not None:
        value, unit = timing.bounds
        if unit == "wk" and float(value).is_integer():
            weeks = int(value)
        else:
            duration = (int(value) if float(value).is_integer() else value, unit)
    period = timing.period
    return Schedule(
        dose_iu=int(round(dose)),
        every=timing.period_unit,
        weeks=weeks,
        key=key,
        frequency=timing.frequency,
        period=int(period) if float(period).is_integer() else period,
        count=timing.count,
        duration=duration,
    )


def unique(meds: Iterable[Medication]) -> list[Medication]:
    """Each order once: a later entry with the same id (a draft re-signing an order on file, a
    resource sent twice) replaces the earlier one. Statements and orders never share a key."""
    out: dict[object, Medication] = {}
    for n, med in enumerate(meds):
        kind = "statement" if med.resource_type == "MedicationStatement" else "order"
        key = (kind, med.id) if med.id is not None else n
        out.pop(key, None)
        out[key] = med
    return list(out.values())


CODE_LABELS = {
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
}


def product_code(med: Medication) -> str | None:
    """'RxNorm 804617' or 'ATC B01AA03' for card text: the first code we know the system of."""
    for system, code in med.codes:
        if system in CODE_LABELS:
            return f"{CODE_LABELS[system]} {code}"
    return None
