"""Plain typed facts about one patient at one moment: what the guideline rules read.

No I/O and no FHIR JSON here: the extractors in this package turn raw resources into these
values, and rules never see anything else. Units are fixed by the field names (ng/mL, IU/day,
mg, years) so no rule has to convert.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from functools import cached_property
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[_T]) -> type[_T]:
    """`@dataclass(frozen=True)` with a quicker `__init__`: the generated one sets each field
    through `object.__setattr__` (about 0.1 µs a field), this one fills the instance's
    `__dict__` in one call. A call builds a few dozen of these; the signature, defaults,
    equality, hashing and immutability are the dataclass's own."""
    cls = dataclass(frozen=True)(cls)
    if hasattr(cls, "__post_init__"):
        return cls  # not the simple case: keep the dataclass's own
    params = []
    defaults: dict[str, object] = {}
    for f in fields(cls):
        if not f.init or f.default_factory is not MISSING:
            return cls  # not the simple case: keep the dataclass's own
        if f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    names = [f.name for f in fields(cls)]
    source = (
        f"def __init__(self, {', '.join(params)}):\n"
        f"    self.__dict__.update({', '.join(f'{n}={n}' for n in names)})\n"
    )
    namespace: dict[str, object] = {}
    exec(source, defaults, namespace)  # noqa: S102 - field names from this module's classes
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the same signature
    cls.__init__ = init  # type: ignore[misc]
    return cls


class Ingredient(enum.StrEnum):
    """Ingredients the service reasons about (one product may carry several)."""

    VITAMIN_D3 = "vitamin-d3"  # cholecalciferol
    VITAMIN_D2 = "vitamin-d2"  # ergocalciferol
    VITAMIN_D_UNSPECIFIED = "vitamin-d"  # "Vitamin D 250 UNT": D3 or D2 not said
    CALCIUM = "calcium"  # calcium salt given as a calcium supplement
    VITAMIN_K1 = "vitamin-k1"  # phytonadione / phylloquinone
    VITAMIN_K2 = "vitamin-k2"  # menaquinone (MK-7, MK-4 / menatetrenone)
    VITAMIN_K_UNSPECIFIED = "vitamin-k"  # "Vitamin K 0.04 MG": K1 or K2 not said

    @property
    def is_vitamin_d(self) -> bool:
        return self in VITAMIN_D_INGREDIENTS

    @property
    def is_vitamin_k(self) -> bool:
        return self in VITAMIN_K_INGREDIENTS


class DrugClass(enum.StrEnum):
    """Drug classes the rules ask about (a product belongs to them by code or name)."""

    VKA = "vka"  # warfarin, acenocoumarol, phenprocoumon, fluindione, phenindione
    DOAC = "doac"  # apixaban, rivaroxaban, edoxaban, dabigatran
    HEPARIN = "heparin"  # unfractionated and low-molecular-weight heparins
    # prednisone, prednisolone, methylprednisolone, dexamethasone, hydrocortisone by mouth or
    # injection (not inhaled, nasal or topical)
    SYSTEMIC_GLUCOCORTICOID = "systemic-glucocorticoid"
    # calcitriol, alfacalcidol, paricalcitol, doxercalciferol: need no renal activation, do not
    # raise 25(OH)D; never converted to IU nor counted as vitamin D (contract §4)
    ACTIVE_VITAMIN_D_ANALOG = "active-vitamin-d-analog"
    CALCIFEDIOL = "calcifediol"  # 25(OH)D3: not interchangeable with cholecalciferol by IU
    # anticonvulsants (phenytoin ... oxcarbazepine), ketoconazole, HIV antiretrovirals
    # (efavirenz), cholestyramine: they lower 25(OH)D (ES 2011 recommendation 4.2)
    LOWERS_VITAMIN_D = "lowers-vitamin-d"
    ANTIRESORPTIVE = "antiresorptive"  # bisphosphonates, denosumab

    @property
    def is_vitamin_d(self) -> bool:
        return False

    @property
    def is_vitamin_k(self) -> bool:
        return False


VITAMIN_D_INGREDIENTS = frozenset(
    {Ingredient.VITAMIN_D3, Ingredient.VITAMIN_D2, Ingredient.VITAMIN_D_UNSPECIFIED}
)
VITAMIN_K_INGREDIENTS = frozenset(
    {Ingredient.VITAMIN_K1, Ingredient.VITAMIN_K2, Ingredient.VITAMIN_K_UNSPECIFIED}
)


class MedicationSource(enum.StrEnum):
    REQUEST = "MedicationRequest"  # an order on file (status active)
    STATEMENT = "MedicationStatement"  # patient-reported / OTC use on file
    DRAFT = "draft"  # in context.draftOrders (order-select / order-sign)


@frozen
class Patient:
    id: str | None
    birth_date: date | None
    age_years: int | None  # whole years at the hook's time; None without birthDate
    age_days: int | None  # for infants (< 1 year)
    sex: str | None  # FHIR administrative gender: male | female | other | unknown
    deceased: bool
    name: str | None = None  # for the history page's header only; never in cards or logs


@frozen
class VitaminDLevel:
    """One total 25(OH)D result, normalised to ng/mL when it can be read."""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None  # effectiveDateTime, effectivePeriod.end, else issued (UTC-aware)
    ng_ml: float | None  # None when uninterpretable
    comparator: str | None  # "<", "<=", ">", ">=" as sent; "<5" counts as below 5
    raw_value: str | None  # the value as sent (for card text), e.g. "5" or None
    raw_unit: str | None  # the unit as sent, e.g. "nmol/L"

    @property
    def interpretable(self) -> bool:
        return self.ng_ml is not None


@frozen
class CalciumLevel:
    """One serum calcium result, normalised to mg/dL (mmol/L × 4.008)."""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None
    mg_dl: float | None
    raw_value: str | None
    raw_unit: str | None


@frozen
class InrLevel:
    """One INR result (a dimensionless ratio); `ratio` is None when it cannot be read."""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None
    ratio: float | None
    comparator: str | None
    raw_value: str | None
    raw_unit: str | None

    @property
    def interpretable(self) -> bool:
        return self.ratio is not None


@frozen
class BmiLevel:
    """One body mass index result in kg/m² (LOINC 39156-5); `kg_m2` None when unreadable."""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None
    kg_m2: float | None
    comparator: str | None
    raw_value: str | None
    raw_unit: str | None


@frozen
class IngredientAmount:
    """How much of one ingredient one unit of the product holds (tablet, capsule, mL, drop)."""

    ingredient: Ingredient
    amount: float
    unit: str  # "IU" for vitamin D; "mg" elemental for calcium; "ug" for vitamin K; "mg" others


@frozen
class DoseTiming:
    """The structured schedule of one dosage (timing.repeat), kept to copy it exactly.

    `frequency` administrations every `period` `period_unit` (UCUM: h, d, wk, mo, a); `count`
    doses in all, or a course `bounds` (value, unit). Only a plain, fully stated repeat is kept.
    """

    frequency: int
    period: float
    period_unit: str
    count: int | None = None
    bounds: tuple[float, str] | None = None


@frozen
class Medication:
    """One medication use (order, statement or draft) with what the service recognised."""

    id: str | None  # resource id (drafts: the id to name in a delete action)
    resource_type: str  # MedicationRequest, MedicationStatement, MedicationOrder
    source: MedicationSource
    status: str | None
    name: str  # best human-readable name (code text/display), for card text
    codes: tuple[tuple[str, str], ...]  # (system, code) pairs seen on the product
    ingredients: frozenset[Ingredient]
    strengths: tuple[IngredientAmount, ...] = ()  # per unit, where known
    classes: frozenset[DrugClass] = frozenset()  # VKA, DOAC, heparin, systemic glucocorticoid
    # Per administration and per day, by ingredient family; None = could not be worked out.
    vitamin_d_iu_per_dose: float | None = None
    vitamin_d_iu_per_day: float | None = None  # daily-equivalent, averaged over the period
    calcium_mg_per_dose: float | None = None  # elemental calcium
    calcium_mg_per_day: float | None = None
    vitamin_k_ug_per_dose: float | None = None
    vitamin_k_ug_per_day: float | None = None
    # A vitamin K antagonist's mg per day, when the dose is a count of units of stated
    # strength (the history picture shows it; no rule reads it).
    vka_mg_per_day: float | None = None
    course_days: float | None = None  # boundsDuration / count-limited course length
    dosage_text: str | None = None  # the first dosage's text as written ("300 mg daily")
    authored: datetime | None = None
    # The schedule when the order has exactly one dosage with a plain timing.repeat (else None).
    timing: DoseTiming | None = None
    # When the use started and ended, as far as the resource says (for the history picture):
    # statements: effectivePeriod / effectiveDateTime; orders: boundsPeriod, else authoredOn
    # and course length. None = not stated.
    started: datetime | None = None
    ended: datetime | None = None

    def has(self, *kinds: Ingredient | DrugClass) -> bool:
        """The product holds one of these ingredients or belongs to one of these classes."""
        return not (self.ingredients.isdisjoint(kinds) and self.classes.isdisjoint(kinds))

    @property
    def has_vitamin_d(self) -> bool:
        return not self.ingredients.isdisjoint(VITAMIN_D_INGREDIENTS)

    @property
    def has_vitamin_k(self) -> bool:
        return not self.ingredients.isdisjoint(VITAMIN_K_INGREDIENTS)


class ConditionCategory(enum.StrEnum):
    """The condition groups of the contract (§4, §5); codes in knowledge/conditions.json."""

    OSTEOPOROSIS = "osteoporosis"
    OSTEOPENIA = "osteopenia"
    VITAMIN_D_DEFICIENCY = "vitamin-d-deficiency"
    HYPERCALCEMIA = "hypercalcemia"
    NEPHROLITHIASIS = "nephrolithiasis"
    CKD_3_5 = "ckd-3-5"
    SARCOIDOSIS = "sarcoidosis"
    PRIMARY_HYPERPARATHYROIDISM = "primary-hyperparathyroidism"
    FALLS = "falls"
    MALABSORPTION = "malabsorption"
    PREGNANCY = "pregnancy"
    FRAGILITY_FRACTURE = "fragility-fracture"
    OBESITY = "obesity"


@frozen
class Condition:
    condition_id: str | None
    categories: frozenset[ConditionCategory]
    code: tuple[str, str]  # (system, code) that matched
    display: str | None
    onset: datetime | None


@frozen
class LabDraft:
    """A drafted laboratory test (ServiceRequest) in draftOrders, coded in LOINC."""

    id: str | None
    resource_type: str
    loinc: str
    name: str
    when: datetime | None  # occurrence (start), else authoredOn; None: not stated (now)


@frozen
class Facts:
    """Everything the rules may know about one call."""

    now: datetime  # the hook's time (UTC-aware)
    service_id: str
    hook: str
    patient: Patient | None
    vitamin_d_levels: tuple[VitaminDLevel, ...] = ()  # newest first
    calcium_levels: tuple[CalciumLevel, ...] = ()  # newest first
    inr_levels: tuple[InrLevel, ...] = ()  # newest first
    bmi_levels: tuple[BmiLevel, ...] = ()  # newest first
    medications: tuple[Medication, ...] = ()  # active requests and statements on file
    # Requests and statements on file that were used before (completed, stopped, on-hold):
    # for the history picture only; rules must not read them as current.
    past_medications: tuple[Medication, ...] = ()
    drafts: tuple[Medication, ...] = ()  # draft orders in context (ours only)
    lab_drafts: tuple[LabDraft, ...] = ()  # drafted 25(OH)D tests (ServiceRequest)
    selections: tuple[str, ...] = ()  # order-select: "MedicationRequest/<id>" selected
    conditions: tuple[Condition, ...] = ()
    tenant: str | None = None
    skipped: int = 0  # resources that could not be read and were skipped
    notes: tuple[str, ...] = field(default=())  # non-clinical notes (e.g. "no birthDate")

    @cached_property
    def categories(self) -> frozenset[ConditionCategory]:
        """Read by most rules: worked out once per call (the facts never change)."""
        out: set[ConditionCategory] = set()
        for c in self.conditions:
            out |= c.categories
        return frozenset(out)

    @property
    def pregnant(self) -> bool:
        return ConditionCategory.PREGNANCY in self.categories
