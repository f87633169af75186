"""The Patient resource as `Patient` facts: age at the hook's time, sex, deceased."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from .fhirdates import parse_date
from .model import Patient


def age_in_years(birth: date, on: date) -> int:
    """Whole years; a 29 February birthday falls on 1 March in common years."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def read_patient(resource: Any, now: datetime) -> Patient | None:
    """None if `resource` is not a Patient. A birthDate that is only a year ("1950") or a month
    is read as its first day, which can make the patient look up to a year older: age-banded
    rules then never treat an adult as a child. No birthDate: ages are None."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        return None
    birth = parse_date(resource.get("birthDate"))
    today = now.date()
    if birth is not None and birth > today:
        birth = None  # a birth in the future is an entry error: no age
    deceased = resource.get("deceasedBoolean") is True or isinstance(
        resource.get("deceasedDateTime"), str
    )
    gender = resource.get("gender")
    rid = resource.get("id")
    name = display_name(resource.get("name"))
    return Patient(
        id=rid if isinstance(rid, str) else None,
        birth_date=birth,
        age_years=age_in_years(birth, today) if birth else None,
        age_days=(today - birth).days if birth else None,
        sex=gender if isinstance(gender, str) else None,
        deceased=deceased,
        name=name,
    )


def display_name(names: Any) -> str | None:
    """The name to show: an official (else usual, else the first) HumanName, as its `text` or
    given names then family; None when there is none."""
    if not isinstance(names, list):
        return None
    usable = [n for n in names if isinstance(n, dict)]
    chosen = next(
        (n for use in ("official", "usual") for n in usable if n.get("use") == use),
        usable[0] if usable else None,
    )
    if chosen is None:
        return None
    text = chosen.get("text")
    if isinstance(text, str) and text.strip():
        return " ".join(text.split())[:200]
    given = chosen.get("given") if isinstance(chosen.get("given"), list) else []
    parts = [p for p in (*given, chosen.get("family")) if isinstance(p, str) and p.strip()]
    return " ".join(" ".join(parts).split())[:200] or None
