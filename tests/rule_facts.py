"""Facts for rule tests, built the way the service builds them: FHIR JSON → `build_facts`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds_service.facts import build_facts
from cds_service.gather import Gathered
from cds_service.guideline import load_guideline
from tests import builders as b

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEFAULT = load_guideline("default")
ES2024 = load_guideline("es2024")
SERVICE = {
    "patient-view": "vitamin-d-patient-view",
    "order-select": "vitamin-d-order-select",
    "order-sign": "vitamin-d-order-sign",
}


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).date().isoformat()


def born(years: int, *, extra_days: int = 30) -> str:
    """A birthDate giving exactly `years` whole years at NOW."""
    return (
        NOW.date().replace(year=NOW.year - years).isoformat()
        if extra_days == 0
        else (NOW.date().replace(year=NOW.year - years) - timedelta(days=extra_days)).isoformat()
    )


def level(
    value: float,
    unit: str = "ng/mL",
    *,
    days: float = 30,
    oid: str | None = None,
    code: str = "62292-8",
    comparator: str | None = None,
) -> dict:
    obs = b.vitamin_d(value, unit, days_ago(days), oid=oid or f"vd-{value}-{days}", code=code)
    if comparator:
        obs["valueQuantity"]["comparator"] = comparator
    return obs


def d3(dose: float, *, mid: str = "d3", per: str = "d", status: str = "active") -> dict:
    return b.medication_request(
        "199362", "Cholecalciferol 1000 UNT Oral Tablet", mid=mid, dose=dose, per=per, status=status
    )


def calcium(*, mid: str = "ca", status: str = "active", tablets: float = 1) -> dict:
    return b.medication_request(
        "282465",
        "Calcium Carbonate 1250 MG Oral Tablet",
        mid=mid,
        dose=tablets,
        unit="{tbl}",
        status=status,
    )


def warfarin(*, mid: str = "w1", status: str = "active") -> dict:
    return b.medication_request(
        "855332", "Warfarin Sodium 5 MG Oral Tablet", mid=mid, dose=1, unit="{tbl}", status=status
    )


def text_only(text: str, *, mid: str, status: str = "active") -> dict:
    """A MedicationRequest whose product is named only in free text (no coding)."""
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "medicationCodeableConcept": {"text": text},
    }


def condition(snomed: str, display: str = "x", cid: str | None = None) -> dict:
    return b.condition(snomed, display, cid=cid or f"c-{snomed}")


OSTEOPOROSIS = "64859006"
OSTEOPENIA = "312894000"
FALLS = "161898004"
PREGNANCY = "77386006"
CKD = "709044004"
SARCOIDOSIS = "31541009"
DEFICIENCY_DX = "34713006"


def facts(
    *,
    age: int | None = 45,
    sex: str = "female",
    levels=(),
    meds=(),
    drafts=(),
    conditions=(),
    hook: str = "patient-view",
    birth_date: str | None = None,
    statements=(),
    selections: list[str] | None = None,
    **patient,
):
    birth = birth_date if birth_date is not None else (born(age) if age is not None else None)
    resources = {
        "patient": [b.patient(birth_date=birth, gender=sex, **patient)],
        "observations": list(levels),
        "medicationRequests": list(meds),
        "medicationStatements": list(statements),
        "conditions": list(conditions),
    }
    request = b.hook_request(SERVICE[hook], drafts=list(drafts))
    if selections is not None:
        request["context"]["selections"] = selections
    return build_facts(request, Gathered(resources, (), 0), service_id=SERVICE[hook], now=NOW)
