"""Three synthetic patients for the history picture (fixed dates; `NOW` is the viewing time).

- `deficient_then_corrected`: 25(OH)D 12 ng/mL, 50,000 IU weekly × 8 weeks (completed), then
  1,000 IU daily (active); later results 24 ng/mL, 34 ng/mL and 86 nmol/L (34.5 ng/mL).
- `warfarin_with_inr`: warfarin 5 mg daily and vitamin D3 1,000 IU daily (active), a K2
  (MK-7) statement; 25(OH)D 28 ng/mL; INR 2.4, 2.8, 1.9, 2.3 (the picture must show INR).
- `no_results`: a Patient and nothing else.

Products are named by text only (no invented RxNorm codes); the facts recognise them by name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .builders import LOINC, UCUM

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def bundle(*resources: dict) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r}
            for r in resources
        ],
    }


def patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1950-06-15"}


def level(pid: str, oid: str, when: str, value: Any, unit: str | None = "ng/mL", *, code: str = "62292-8", comparator: str | None = None) -> dict:
    quantity: dict[str, Any] = {"value": value}
    if unit:
        quantity.update({"unit": unit, "system": UCUM, "code": unit})
    if comparator:
        quantity["comparator"] = comparator
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": quantity,
    }


def inr(pid: str, oid: str, when: str, value: float) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6301-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "{INR}", "system": UCUM, "code": "{INR}"},
    }


def order(pid: str, mid: str, text: str, status: str, repeat: dict, *, dose: float = 1, unit: str = "capsule", authored: str | None = None) -> dict:
    out = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": f"Patient/{pid}"},
        "dosageInstruction": [
            {
                "timing": {"repeat": repeat},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit}}],
            }
        ],
    }
    if authored:
        out["authoredOn"] = authored
    return out


def statement(pid: str, sid: str, text: str, start: str, *, per_day: float = 1) -> dict:
    return {
        "resourceType": "MedicationStatement",
        "id": sid,
        "status": "active",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": f"Patient/{pid}"},
        "effectivePeriod": {"start": start},
        "dosage": [
            {
                "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule"}}],
            }
        ],
    }


DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}
WEEKLY = {"frequency": 1, "period": 1, "periodUnit": "wk"}


def deficient_then_corrected() -> dict:
    pid = "hist-deficient"
    return bundle(
        patient(pid),
        level(pid, "vd-1", "2025-01-10", 12),
        order(pid, "loading", "Cholecalciferol 50000 UNT Oral Capsule", "completed", {**WEEKLY, "boundsPeriod": {"start": "2025-01-15", "end": "2025-03-12"}}),
        level(pid, "vd-2", "2025-02-25", 24),
        order(pid, "maintenance", "Cholecalciferol 1000 UNT Oral Tablet", "active", {**DAILY, "boundsPeriod": {"start": "2025-03-12"}}, unit="tablet"),
        level(pid, "vd-3", "2025-05-20", 34),
        level(pid, "vd-4", "2025-11-04", 86, "nmol/L", code="14635-7"),
    )


def warfarin_with_inr() -> dict:
    pid = "hist-warfarin"
    return bundle(
        patient(pid),
        order(pid, "warfarin", "Warfarin Sodium 5 MG Oral Tablet", "active", {**DAILY, "boundsPeriod": {"start": "2025-06-01"}}, unit="tablet"),
        statement(pid, "d3", "Vitamin D3 1000 IU capsule", "2025-06-01"),
        statement(pid, "k2", "Vitamin K2 (menaquinone-7) 100 mcg capsule", "2026-03-01"),
        level(pid, "vd-1", "2025-09-01", 28),
        inr(pid, "inr-1", "2026-01-10", 2.4),
        inr(pid, "inr-2", "2026-02-10", 2.8),
        inr(pid, "inr-3", "2026-03-20", 1.9),
        inr(pid, "inr-4", "2026-04-20", 2.3),
    )


def no_results() -> dict:
    return bundle(patient("hist-empty"))


PATIENTS = {
    "deficient-then-corrected": deficient_then_corrected,
    "warfarin-with-inr": warfarin_with_inr,
    "no-results": no_results,
}
