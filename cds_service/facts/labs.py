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
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from ..knowledge import load
from .dosing import finite
from .fhirdates import parse_instant
from .model import CalciumLevel, InrLevel, VitaminDLevel

UCUM = "http://unitsofmeasure.org"
COMPARATORS = frozenset({"<", "<=", ">", ">="})
_VALUE_STRING = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?)\s*(\S+)?\s*$")

T = TypeVar("T")


def _knowledge() -> dict:
    return load("labs")


def _codes(entries: list[dict]) -> frozenset[str]:
    return frozenset(e["code"] for e in entries)


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


def _unit_key(unit: str, table: dict[str, Any]) -> str | None:
    """The table's spelling of `unit`, matched case-insensitively (ng/ml = ng/mL)."""
    wanted = unit.strip().lower()
    return next((key for key in table if key.lower() == wanted), None)


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


def _readable(resource: Any, accepted: frozenset[str], excluded: frozenset[str]) -> str | None:
    """The accepted LOINC code of a counted Observation, else None."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        return None
    if resource.get("status") not in _knowledge()["vitamin_d_25oh"]["statuses"]["values"]:
        return None
    codes = _loinc_codes(resource)
    if any(c in excluded for c in codes):
        return None
    return next((c for c in codes if c in accepted), None)


def _newest_first(items: list[T], when: Callable[[T], datetime | None]) -> tuple[T, ...]:
    dated = sorted((i for i in items if when(i) is not None), key=when, reverse=True)  # type: ignore[arg-type,return-value]
    return tuple(dated + [i for i in items if when(i) is None])


@dataclass(frozen=True)
class _Result:
    """One counted Observation, its value converted by the unit table (None if unreadable)."""

    observation_id: str | None
    loinc: str
    status: str
    when: datetime | None
    converted: float | None
    comparator: str | None
    raw_value: str | None
    raw_unit: str | None


def _results(
    observations: Iterable[Any],
    accepted: frozenset[str],
    excluded: frozenset[str],
    units: dict[str, Any],
    ceiling: float,
    *,
    unitless_factor: float | None = None,
) -> list[_Result]:
    """`unitless_factor`: how a number sent with no unit converts (None: it is unreadable)."""
    out = []
    for resource in observations:
        loinc = _readable(resource, accepted, excluded)
        if loinc is None:
            continue
        number, comparator, raw, unit = _quantity(resource)
        key = _unit_key(unit, units) if unit else None
        factor = units[key]["factor"] if key is not None else None
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
                _when(resource),
                converted,
                comparator,
                raw,
                unit,
            )
        )
    return out


L = TypeVar("L", VitaminDLevel, InrLevel)


def _levels(kind: type[L], results: list[_Result]) -> tuple[L, ...]:
    """Results as `kind` (fields in _Result's order, the converted value in place), newest first."""
    levels = [
        kind(
            r.observation_id,
            r.loinc,
            r.status,
            r.when,
            r.converted,
            r.comparator,
            r.raw_value,
            r.raw_unit,
        )
        for r in results
    ]
    return _newest_first(levels, lambda lvl: lvl.when)


@cache
def _counted_codes() -> frozenset[str]:
    """Every LOINC code some reader here accepts (25(OH)D, calcium, INR)."""
    k = _knowledge()
    return (
        _codes(k["vitamin_d_25oh"]["accepted"])
        | _codes(k["calcium"]["codes"])
        | _codes(k["inr"]["codes"])
    )


def lab_observations(observations: Iterable[Any]) -> list[Any]:
    """Only the Observations some reader here could count: one look at each resource's codes,
    instead of one per reader (most of a record's labs are other tests)."""
    counted = _counted_codes()
    return [
        r for r in observations if isinstance(r, dict) and not counted.isdisjoint(_loinc_codes(r))
    ]


def read_vitamin_d_levels(observations: Iterable[Any]) -> tuple[VitaminDLevel, ...]:
    vd = _knowledge()["vitamin_d_25oh"]
    results = _results(
        observations,
        _codes(vd["accepted"]),
        _codes(vd["excluded"]),
        vd["units_to_ng_ml"],
        vd["plausible_max_ng_ml"]["value"],
    )
    return _levels(VitaminDLevel, results)


def read_calcium_levels(observations: Iterable[Any]) -> tuple[CalciumLevel, ...]:
    ca = _knowledge()["calcium"]
    results = _results(
        observations, _codes(ca["codes"]), frozenset(), ca["units_to_mg_dl"], float("inf")
    )
    levels = [
        CalciumLevel(
            r.observation_id, r.loinc, r.status, r.when, r.converted, r.raw_value, r.raw_unit
        )
        for r in results
    ]
    return _newest_first(levels, lambda lvl: lvl.when)


def read_inr_levels(observations: Iterable[Any]) -> tuple[InrLevel, ...]:
    """INR results (a ratio: no unit, or {INR}/{ratio}/1), newest first."""
    inr = _knowledge()["inr"]
    results = _results(
        observations,
        _codes(inr["codes"]),
        frozenset(),
        inr["units_to_ratio"],
        inr["plausible_max"]["value"],
        unitless_factor=1.0 if inr["unitless_is_ratio"]["value"] else None,
    )
    return _levels(InrLevel, results)
