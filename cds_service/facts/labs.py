"""Observations as 25(OH)D levels (ng/mL), serum calcium (mg/dL) and INR (knowledge/labs.json).

Rules of reading (contract §5): accepted LOINC codes only, never 1,25-dihydroxy or D2-only (an
Observation carrying an excluded code is excluded even if it also carries an accepted one);
status final/amended/corrected only; date = effectiveDateTime, effectivePeriod.end, else issued.
A result whose unit is unknown or whose value is not a number is kept as uninterpretable
(`ng_ml=None`) so the rules can say the latest result could not be read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple, TypeVar

from ..knowledge import load
from .dosing import finite
from .fhirdates import parse_instant
from .model import BmiLevel, CalciumLevel, InrLevel, VitaminDLevel

UCUM = "http://unitsofmeasure.org"
COMPARATORS = frozenset({"<", "<=", ">", ">="})
_VALUE_STRING = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?)\s*(\S+)?\s*$")

T = TypeVar("T")


def _knowledge() -> dict:
    return load("labs")


@cache
def _codes(kind: str, field: str) -> frozenset[str]:
    """The codes of knowledge/labs.json `kind`.`field`."""
    return frozenset(e["code"] for e in _knowledge()[kind][field])


def _loinc_codes(resource: dict) -> list[str]:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return []
    system = _knowledge()["loinc_system"]
    return [
        c["code"]
        for c in codings
        if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)
    ]


def _when(resource: dict) -> datetime | None:
    period = resource.get("effectivePeriod")
    for value in (
        resource.get("effectiveDateTime"),
        period.get("end") if isinstance(period, dict) else None,
        resource.get("issued"),
        resource.get("effectiveInstant"),
    ):
        parsed = parse_instant(value)
        if parsed is not None:
            return parsed
    return None


@cache
def _unit_factors(kind: str, field: str) -> dict[str, float]:
    """knowledge/labs.json `kind`.`field` (a unit table) as lower-cased unit -> factor, so a
    unit is matched case-insensitively (ng/ml = ng/mL); of two spellings that differ only in
    case, the first in the table counts."""
    out: dict[str, float] = {}
    for spelling, entry in _knowledge()[kind][field].items():
        out.setdefault(spelling.lower(), entry["factor"])
    return out


def _quantity(resource: dict) -> tuple[float | None, str | None, str | None, str | None]:
    """(number, comparator, raw value text, unit text) from valueQuantity or a plain valueString."""
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        raw = quantity.get("value")
        number = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number = finite(raw)
        elif isinstance(raw, str):
            try:
                number = finite(float(raw))
            except ValueError:
                number = None
        comparator = quantity.get("comparator")
        if not isinstance(comparator, str) or comparator not in COMPARATORS:
            comparator = None
        unit = None
        if quantity.get("system") == UCUM and isinstance(quantity.get("code"), str):
            unit = quantity["code"]
        elif isinstance(quantity.get("unit"), str):
            unit = quantity["unit"]
        elif isinstance(quantity.get("code"), str):
            unit = quantity["code"]
        return number, comparator, None if raw is None else str(raw), unit
    text = resource.get("valueString")
    if isinstance(text, str):
        match = _VALUE_STRING.match(text)
        if match:
            comparator, number, unit = match.groups()
            return float(number), comparator, text.strip(), unit
        return None, None, text.strip()[:40], None
    return None, None, None, None


def _newest_first(items: list[T], when: Callable[[T], datetime | None]) -> tuple[T, ...]:
    dated = sorted((i for i in items if when(i) is not None), key=when, reverse=True)  # type: ignore[arg-type,return-value]
    return tuple(dated + [i for i in items if when(i) is None])


class _Result(NamedTuple):
    """One counted Observation, its value converted by the unit table (None if unreadable).
    (A tuple: a frozen dataclass costs a microsecond more to build, per result, per call.)"""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None
    converted: float | None
    comparator: str | None
    raw_value: str | None
    raw_unit: str | None


@dataclass(frozen=True)
class LabObservations:
    """The Observations some reader here counts (status final/amended/corrected, a counted
    LOINC code), each with its LOINC codes and its date, read once for all the readers."""

    items: tuple[tuple[dict, tuple[str, ...], datetime | None], ...]


# A result dated after the hook's time is ignored beyond this much clock skew (contract §5).
CLOCK_SKEW = timedelta(days=1)
_INHERITED = ("id", "status", "effectiveDateTime", "effectivePeriod", "issued", "effectiveInstant")


def lab_observations(
    observations: Iterable[Any] | LabObservations, now: datetime | None = None
) -> LabObservations:
    """One look at each resource: most of a record's labs are tests no reader counts.

    A panel's `component` with a counted code counts like an Observation of its own (the
    panel's id, status and date, the component's code and value). With `now`, a result dated
    more than a day after it is left out: a future date is an error, not the latest level.
    """
    if isinstance(observations, LabObservations):
        return observations
    counted = _counted_codes()
    statuses = _knowledge()["vitamin_d_25oh"]["statuses"]["values"]
    latest = now + CLOCK_SKEW if now is not None else None
    items = []
    for resource in observations:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            continue
        if resource.get("status") not in statuses:
            continue
        codes = _loinc_codes(resource)
        found = [(resource, tuple(codes))] if not counted.isdisjoint(codes) else []
        components = resource.get("component")
        if isinstance(components, list):
            found += _components(resource, components, counted)
        for item, item_codes in found:
            when = _when(item)
            if latest is not None and when is not None and when > latest:
                continue
            items.append((item, item_codes, when))
    return LabObservations(tuple(items))


def _components(
    panel: dict, components: list[Any], counted: frozenset[str]
) -> list[tuple[dict, tuple[str, ...]]]:
    out = []
    for component in components:
        if not isinstance(component, dict):
            continue
        codes = _loinc_codes(component)
        if counted.isdisjoint(codes):
            continue
        own = {k: panel[k] for k in _INHERITED if k in panel}
        own.update({k: v for k, v in component.items() if k.startswith("value") or k == "code"})
        own["resourceType"] = "Observation"
        out.append((own, tuple(codes)))
    return out


def _results(
    observations: Iterable[Any] | LabObservations,
    accepted: frozenset[str],
    excluded: frozenset[str],
    factors: dict[str, float],
    ceiling: float,
    *,
    unitless_factor: float | None = None,
) -> list[_Result]:
    """`factors`: `_unit_factors` of the reader's unit table. `unitless_factor`: how a number
    sent with no unit converts (None: it is unreadable).
    An Observation carrying an excluded code is not counted even with an accepted one."""
    out = []
    for resource, codes, when in lab_observations(observations).items:
        if not excluded.isdisjoint(codes):
            continue
        for loinc in codes:
            if loinc in accepted:
                break
        else:
            continue
        number, comparator, raw, unit = _quantity(resource)
        factor = factors.get(unit.strip().lower()) if unit else None
        if not (unit or "").strip():
            factor = unitless_factor
        converted = None
        if number is not None and factor is not None:
            converted = number * factor
            if not 0 <= converted <= ceiling:
                converted = None
        rid = resource.get("id")
        out.append(
            _Result(
                rid if isinstance(rid, str) else None,
                loinc,
                resource["status"],
                when,
                converted,
                comparator,
                raw,
                unit,
            )
        )
    return out


L = TypeVar("L", VitaminDLevel, InrLevel, BmiLevel)


def _levels(kind: type[L], results: list[_Result]) -> tuple[L, ...]:
    """Results as `kind` (fields in _Result's order, the converted value in place), newest first."""
    return _newest_first([kind(*r) for r in results], lambda lvl: lvl.when)


@cache
def _counted_codes() -> frozenset[str]:
    """Every LOINC code some reader here accepts (25(OH)D, calcium, INR)."""
    return (
        _codes("vitamin_d_25oh", "accepted")
        | _codes("calcium", "codes")
        | _codes("inr", "codes")
        | _codes("bmi", "codes")
    )


def read_vitamin_d_levels(
    observations: Iterable[Any] | LabObservations,
) -> tuple[VitaminDLevel, ...]:
    vd = _knowledge()["vitamin_d_25oh"]
    results = _results(
        observations,
        _codes("vitamin_d_25oh", "accepted"),
        _codes("vitamin_d_25oh", "excluded"),
        _unit_factors("vitamin_d_25oh", "units_to_ng_ml"),
        vd["plausible_max_ng_ml"]["value"],
    )
    return _levels(VitaminDLevel, results)


def read_calcium_levels(observations: Iterable[Any] | LabObservations) -> tuple[CalciumLevel, ...]:
    results = _results(
        observations,
        _codes("calcium", "codes"),
        frozenset(),
        _unit_factors("calcium", "units_to_mg_dl"),
        float("inf"),
    )
    levels = [
        CalciumLevel(
            r.observation_id, r.loinc, r.status, r.when, r.converted, r.raw_value, r.raw_unit
        )
        for r in results
    ]
    return _newest_first(levels, lambda lvl: lvl.when)


def read_inr_levels(observations: Iterable[Any] | LabObservations) -> tuple[InrLevel, ...]:
    """INR results (a ratio: no unit, or {INR}/{ratio}/1), newest first."""
    inr = _knowledge()["inr"]
    results = _results(
        observations,
        _codes("inr", "codes"),
        frozenset(),
        _unit_factors("inr", "units_to_ratio"),
        inr["plausible_max"]["value"],
        unitless_factor=1.0 if inr["unitless_is_ratio"]["value"] else None,
    )
    return _levels(InrLevel, results)


def read_bmi_levels(observations: Iterable[Any] | LabObservations) -> tuple[BmiLevel, ...]:
    """Body mass index results in kg/m² (LOINC 39156-5), newest first."""
    bmi = _knowledge()["bmi"]
    results = _results(
        observations,
        _codes("bmi", "codes"),
        frozenset(),
        _unit_factors("bmi", "units_to_kg_m2"),
        bmi["plausible_max"]["value"],
    )
    return _levels(BmiLevel, results)
