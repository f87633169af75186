"""Conditions grouped into the contract's categories (codes in knowledge/conditions.json).

A state (osteoporosis, CKD, pregnancy…) counts with clinicalStatus active/recurrence/relapse
(R4 CodeableConcept or an STU3 plain string); an absent clinicalStatus counts unless the
Condition has an abatement (then it is over). A history (nephrolithiasis, falls: knowledge
`history`) counts whatever its clinicalStatus, resolved included (contract §5).
Never counted: verificationStatus entered-in-error or refuted. Codes only, no text matching.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from ..knowledge import load
from .fhirdates import parse_instant
from .model import Condition, ConditionCategory

ABATEMENT_FIELDS = (
    "abatementDateTime",
    "abatementAge",
    "abatementPeriod",
    "abatementRange",
    "abatementString",
    "abatementBoolean",
)


@cache
def _index() -> tuple[dict, dict, list[tuple[str, ConditionCategory]]]:
    """system kind -> exact code -> categories, and ICD-10 prefixes (dots removed)."""
    data = load("conditions")
    exact: dict[tuple[str, str], set[ConditionCategory]] = {}
    prefixes: list[tuple[str, ConditionCategory]] = []
    for name, entry in data["categories"].items():
        category = ConditionCategory(name)
        for code in entry["snomed"]:
            exact.setdefault(("snomed", code), set()).add(category)
        for code in entry["icd10"]:
            flat = code.replace(".", "").upper()
            if flat.endswith("*"):
                prefixes.append((flat[:-1], category))
            else:
                exact.setdefault(("icd10", flat), set()).add(category)
    systems = {url: kind for kind, urls in data["systems"].items() for url in urls}
    return systems, exact, prefixes


def _status_code(value: Any) -> str | None:
    if isinstance(value, str):  # STU3
        return value
    codings = value.get("coding") if isinstance(value, dict) else None
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return coding["code"]
    return None


def _recorded(resource: dict) -> bool:
    """Not refuted nor entered in error: enough for a history."""
    data = load("conditions")
    return (
        _status_code(resource.get("verificationStatus"))
        not in data["verification_status"]["excluded"]
    )


@cache
def _history() -> frozenset[ConditionCategory]:
    return frozenset(ConditionCategory(c) for c in load("conditions")["history"]["categories"])


def _counted(resource: dict) -> bool:
    """A state counts: recorded, and current."""
    data = load("conditions")
    if not _recorded(resource):
        return False
    clinical = _status_code(resource.get("clinicalStatus"))
    if clinical is None:
        return not any(field in resource for field in ABATEMENT_FIELDS)
    return clinical in data["clinical_status"]["counted"]


def categorise(system: Any, code: Any) -> frozenset[ConditionCategory]:
    systems, exact, prefixes = _index()
    kind = systems.get(system) if isinstance(system, str) else None
    if kind is None or not isinstance(code, str):
        return frozenset()
    key = code.strip().replace(".", "").upper() if kind == "icd10" else code.strip()
    found = set(exact.get((kind, key), ()))
    if kind == "icd10":
        found |= {category for prefix, category in prefixes if key.startswith(prefix)}
    return frozenset(found)


def read_conditions(conditions: Iterable[Any]) -> tuple[Condition, ...]:
    out = []
    for resource in conditions:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Condition":
            continue
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        if not isinstance(codings, list) or not codings:  # text only: no category to find
            continue
        if not _recorded(resource):
            continue
        current = _counted(resource)
        categories: set[ConditionCategory] = set()
        matched: tuple[str, str] | None = None
        display = None
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            found = categorise(coding.get("system"), coding.get("code"))
            if not current:
                found &= _history()  # over: only a history still counts
            if found:
                categories |= found
                matched = matched or (coding["system"], coding["code"])
                display = display or coding.get("display")
        if not categories or matched is None:
            continue
        rid = resource.get("id")
        text = code.get("text") if isinstance(code, dict) else None
        out.append(
            Condition(
                condition_id=rid if isinstance(rid, str) else None,
                categories=frozenset(categories),
                code=matched,
                display=display
                if isinstance(display, str)
                else text
                if isinstance(text, str)
                else None,
                onset=parse_instant(resource.get("onsetDateTime")),
            )
        )
    return tuple(out)
