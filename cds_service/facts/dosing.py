"""Doses: per-unit strengths from product names, amounts per administration, administrations per
day, course length. Pure functions over FHIR JSON fragments; unknown stays None, never guessed.

Contract §4-5: daily-equivalent = dose × administrations per day averaged over the dosing
period (50,000 IU once weekly = 7,142.857 IU/day); 1 µg vitamin D = 40 IU; UNT = IU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..knowledge import load
from .model import DoseTiming, Ingredient, IngredientAmount

DAYS_PER_UNIT = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
# HL7 v3 GTSAbbreviation codes (Timing.code) as administrations per day.
TIMING_CODES = {
    "QD": 1,
    "AM": 1,
    "PM": 1,
    "BED": 1,
    "BID": 2,
    "TID": 3,
    "QID": 4,
    "QOD": 0.5,
    "Q1H": 24,
    "Q2H": 12,
    "Q3H": 8,
    "Q4H": 6,
    "Q6H": 4,
    "Q8H": 3,
    "Q12H": 2,
    "HS": 1,
    "WK": 1 / 7,
    "MO": 1 / 30,
}
# A few plain-language instructions, used only when there is no structured timing.
TEXT_FREQUENCIES = (
    (re.compile(r"\b(?:twice (?:a |per )?day|twice daily|bid)\b", re.I), 2.0),
    (re.compile(r"\b(?:three times (?:a |per )?day|tid)\b", re.I), 3.0),
    (re.compile(r"\b(?:once (?:a |per )?week|weekly|every week)\b", re.I), 1 / 7),
    (re.compile(r"\b(?:once (?:a |per )?month|monthly|every month)\b", re.I), 1 / 30),
    (re.compile(r"\b(?:once (?:a |per )?day|once daily|daily|every day|qd)\b", re.I), 1.0),
)
IU_UNITS = {"[iu]", "iu", "u", "unt", "unit", "units", "international unit", "international units"}
MASS_UNITS_UG = {"ug": 1.0, "mcg": 1.0, "µg": 1.0, "μg": 1.0, "mg": 1000.0, "g": 1_000_000.0}
_STRENGTH = re.compile(
    r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(unt|iu|units?|mg|mcg|ug|µg|μg)\b", re.I
)


@dataclass(frozen=True)
class Dose:
    """One administration: either an amount of an ingredient family, or a count of units."""

    count: float | None = None  # tablets, capsules, drops, mL …: multiply by per-unit strength
    iu: float | None = None  # international units
    ug: float | None = None  # mass in micrograms


def _word(value: Any) -> str | None:
    """`value` if it is a string, else None: odd JSON (a list, an object) is no code and must
    never reach a dict or set lookup, where it would raise."""
    return value if isinstance(value, str) else None


def normalise_unit(unit: Any) -> str:
    return unit.strip().lower() if isinstance(unit, str) else ""


def strength_in_base(number: float, unit: str, ingredient: Ingredient) -> IngredientAmount | None:
    """A stated strength in the ingredient's base unit: IU for vitamin D, µg for vitamin K,
    mg for calcium (as stated; the caller applies the salt fraction)."""
    unit = unit.lower()
    if ingredient.is_vitamin_d:
        knowledge = load("medications")
        if unit in IU_UNITS:
            iu = number
        elif unit in MASS_UNITS_UG:
            iu = number * MASS_UNITS_UG[unit] * knowledge["vitamin_d_iu_per_ug"]["value"]
        else:
            return None
        if iu > knowledge["vitamin_d_max_iu_per_unit"]["value"]:
            return None
        return IngredientAmount(ingredient, iu, "IU")
    if unit not in MASS_UNITS_UG:
        return None
    if ingredient.is_vitamin_k:
        return IngredientAmount(ingredient, number * MASS_UNITS_UG[unit], "ug")
    return IngredientAmount(ingredient, number * MASS_UNITS_UG[unit] / 1000.0, "mg")


def parse_strength(component: str) -> tuple[float, str] | None:
    """The last 'number unit' in one name component ('Vitamin K 2 0.09 MG' -> (0.09, 'mg'))."""
    matches = _STRENGTH.findall(component)
    if not matches:
        return None
    number, unit = matches[-1]
    return float(number.replace(",", "")), unit.lower()


def calcium_fraction(component: str) -> float | None:
    """Elemental share of the calcium named in `component` (None: salt with no cited share)."""
    fractions = load("medications")["ingredients"]["calcium"]["elemental_fraction"]
    text = component.lower()
    if "elemental" in text:
        return fractions["elemental"]["value"]
    for salt in ("carbonate", "citrate"):
        if salt in text:
            return fractions[salt]["value"]
    if re.search(r"\bcalcium\s+(?:gluconate|lactate|phosphate|glubionate)\b", text):
        return None
    return fractions["plain"]["value"]


def read_dose(dosage: dict) -> Dose | None:
    """The amount of one administration: R4 doseAndRate[].doseQuantity, the STU3/DSTU2
    dosage.doseQuantity, or the high end of a doseRange (the safety-relevant maximum)."""
    quantity = None
    dose_and_rate = dosage.get("doseAndRate")
    if isinstance(dose_and_rate, dict):  # near-FHIR: one object instead of a list
        dose_and_rate = [dose_and_rate]
    for item in dose_and_rate if isinstance(dose_and_rate, list) else ():
        if isinstance(item, dict):
            quantity = item.get("doseQuantity") or _range_high(item.get("doseRange"))
            if quantity:
                break
    if not quantity:
        quantity = dosage.get("doseQuantity") or _range_high(dosage.get("doseRange"))
    return _quantity_dose(quantity)


def _quantity_dose(quantity: Any) -> Dose | None:
    """One Quantity as a Dose: IU, a mass, or a count of units (tablets, capsules, {tbl},
    drops, no unit …)."""
    if not isinstance(quantity, dict):
        return None
    value = finite(quantity.get("value"))
    if value is None or value < 0:
        return None
    unit = normalise_unit(quantity.get("code")) or normalise_unit(quantity.get("unit"))
    if unit in IU_UNITS:
        return Dose(iu=float(value))
    if unit in MASS_UNITS_UG:
        return Dose(ug=float(value) * MASS_UNITS_UG[unit])
    return Dose(count=float(value))


def as_needed(dosage: dict) -> bool:
    return dosage.get("asNeededBoolean") is True or isinstance(
        dosage.get("asNeededCodeableConcept"), dict
    )


def max_per_period(dosage: dict) -> tuple[Dose, float] | None:
    """`maxDosePerPeriod` as (the dose, periods per day): "at most 5,000 IU per day" is
    (5,000 IU, 1); None when it is absent or cannot be read."""
    ratio = dosage.get("maxDosePerPeriod")
    if isinstance(ratio, list):  # R5 makes it a list; read the first
        ratio = ratio[0] if ratio else None
    if not isinstance(ratio, dict):
        return None
    dose = _quantity_dose(ratio.get("numerator"))
    denominator = ratio.get("denominator")
    if dose is None or not isinstance(denominator, dict):
        return None
    value = finite(denominator.get("value"))
    unit_days = DAYS_PER_UNIT.get(
        _word(denominator.get("code")) or _word(denominator.get("unit")) or ""
    )
    if not value or value <= 0 or not unit_days:
        return None
    return dose, 1.0 / (value * unit_days)


def _range_high(value: Any) -> dict | None:
    return value.get("high") if isinstance(value, dict) else None


def administrations_per_day(dosage: dict) -> float | None:
    """From timing.repeat (the maximum intake where a range is given), timing.code, when /
    timeOfDay lists, else a few plain phrases in the text; None when it cannot be told."""
    timing = dosage.get("timing")
    timing = timing if isinstance(timing, dict) else {}
    repeat = timing.get("repeat")
    if isinstance(repeat, dict):
        frequency = _number(repeat.get("frequencyMax")) or _number(repeat.get("frequency"))
        period = _number(repeat.get("period"))
        unit_days = DAYS_PER_UNIT.get(_word(repeat.get("periodUnit")))
        if period and unit_days:
            return (frequency or 1.0) / (period * unit_days)
        for field in ("when", "timeOfDay"):
            if isinstance(repeat.get(field), list) and repeat[field]:
                return float(len(repeat[field]))
        if frequency and repeat.get("count") is None:
            return None
    code = timing.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and _word(coding.get("code")) in TIMING_CODES:
            return float(TIMING_CODES[coding["code"]])
    text = dosage.get("text")
    if isinstance(text, str):
        for pattern, per_day in TEXT_FREQUENCIES:
            if pattern.search(text):
                return per_day
    return None


def course_days(dosage: dict) -> float | None:
    """Course length from boundsDuration, else from count × the repeat period."""
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return None
    bounds = repeat.get("boundsDuration")
    if isinstance(bounds, dict):
        value = _number(bounds.get("value"))
        unit = DAYS_PER_UNIT.get(_word(bounds.get("code")) or _word(bounds.get("unit")))
        if value and unit:
            return value * unit
    count = _number(repeat.get("count"))
    if not count:  # most dosages: no count, so no need to work out how often
        return None
    per_day = administrations_per_day(dosage)
    return count / per_day if per_day else None


def single_administration(dosage: dict) -> bool:
    """A one-off dose: timing.repeat.count of 1 and nothing else saying how often."""
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    return isinstance(repeat, dict) and _number(repeat.get("count")) == 1


def finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else, including integers too large
    for a float (JSON integers are unbounded) and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _number(value: Any) -> float | None:
    number = finite(value)
    return number if number is not None and number > 0 else None


def combine_daily(parts: Iterable[tuple[Any, float]]) -> float | None:
    """Daily amounts of several dosageInstructions: concurrent ones (same or no `sequence`)
    add up; different sequences are consecutive phases, so the largest phase counts."""
    phases: dict[Any, float] = {}
    for sequence, amount in parts:
        phases[sequence] = phases.get(sequence, 0.0) + amount
    return max(phases.values()) if phases else None


_TIMING_UNITS = frozenset({"h", "d", "wk", "mo", "a"})


# Any of these stated (truthy) makes a timing not plain.
_NOT_PLAIN = (
    "frequencyMax", "periodMax", "countMax", "when", "timeOfDay",
    "dayOfWeek", "boundsRange", "boundsPeriod",
)  # fmt: skip


def plain_timing(dosage: dict) -> DoseTiming | None:
    """timing.repeat as frequency / period / periodUnit (+ count or boundsDuration) when it is
    stated plainly: no ranges (frequencyMax, periodMax), no when/timeOfDay/dayOfWeek lists."""
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if not isinstance(repeat, dict):
        return None
    if any(map(repeat.get, _NOT_PLAIN)):
        return None
    frequency = repeat.get("frequency", 1)
    period = _number(repeat.get("period"))
    unit = _word(repeat.get("periodUnit"))
    if repeat.get("count") == 1 and period is None and unit is None and frequency == 1:
        return DoseTiming(1, 1, "d", count=1)  # one single administration
    if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
        return None
    if period is None or unit not in _TIMING_UNITS:
        return None
    count = repeat.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        return None
    bounds = None
    duration = repeat.get("boundsDuration")
    if isinstance(duration, dict):
        value = _number(duration.get("value"))
        code = _word(duration.get("code")) or _word(duration.get("unit"))
        if value is None or code not in _TIMING_UNITS:
            return None
        bounds = (value, code)
    return DoseTiming(frequency, period, unit, count, bounds)
