"""Small builders for CDS Hooks requests and FHIR resources used across tests."""

from __future__ import annotations

import copy
import uuid
from typing import Any

PATIENT_ID = "pat-1"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"

HOOKS = {
    "vitamin-d-patient-view": "patient-view",
    "vitamin-d-order-select": "order-select",
    "vitamin-d-order-sign": "order-sign",
}
PREFETCH_KEYS = (
    "patient",
    "observations",
    "medicationRequests",
    "medicationStatements",
    "conditions",
)


def searchset(*resources: dict, next_url: str | None = None) -> dict:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for r in resources:
        bundle["entry"].append(
            {"fullUrl": f"{r['resourceType']}/{r.get('id', 'x')}", "resource": r}
        )
    if not bundle["entry"]:
        del bundle["entry"]
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def operation_outcome(text: str = "prefetch failed") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": text}],
    }


def patient(pid: str = PATIENT_ID, birth_date: str | None = "1950-06-15", **extra: Any) -> dict:
    out = {"resourceType": "Patient", "id": pid, "gender": "female"}
    if birth_date:
        out["birthDate"] = birth_date
    out.update(extra)
    return out


def vitamin_d(
    value: float,
    unit: str = "ng/mL",
    when: str = "2026-10-01",
    *,
    oid: str = "vd1",
    code: str = "62292-8",
    status: str = "final",
    pid: str = PATIENT_ID,
) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def medication_request(
    rxcui: str,
    text: str,
    *,
    mid: str = "mr1",
    status: str = "active",
    dose: float | None = None,
    unit: str = "[iU]",
    per: str = "d",
    pid: str | None = PATIENT_ID,
) -> dict:
    out: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": rxcui, "display": text}],
            "text": text,
        },
    }
    if pid:
        out["subject"] = {"reference": f"Patient/{pid}"}
    if dose is not None:
        out["dosageInstruction"] = [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": per}},
                "doseAndRate": [
                    {"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}
                ],
            }
        ]
    return out


def condition(snomed: str, display: str, *, cid: str = "c1", pid: str = PATIENT_ID) -> dict:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": snomed, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


# A record that exercises every prefetch key: warfarin + D3 on file, osteoporosis, a level.
def full_record() -> dict[str, dict]:
    return {
        "patient": patient(),
        "observations": searchset(vitamin_d(12.0)),
        "medicationRequests": searchset(
            medication_request(
                "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1", dose=1, unit="{tbl}"
            )
        ),
        "medicationStatements": searchset(),
        "conditions": searchset(condition("64859006", "Osteoporosis")),
    }


def hook_request(
    service_id: str = "vitamin-d-patient-view",
    *,
    prefetch: dict | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
    drafts: list[dict] | None = None,
    pid: str = PATIENT_ID,
) -> dict:
    hook = HOOKS[service_id]
    context: dict[str, Any] = {"userId": "Practitioner/doc-1", "patientId": pid}
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": d} for d in drafts or []],
        }
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts or []] or [
            "MedicationRequest/none"
        ]
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(prefetch)
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "vitd-cds",
        }
    return body


def null_prefetch() -> dict[str, None]:
    return {key: None for key in PREFETCH_KEYS}
