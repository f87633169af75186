"""The benchmark's realistic order-sign request: full prefetch of 20 Observations, 15
MedicationRequests, 10 Conditions, and a draft vitamin D3 + K2 order.

Codes are only those listed in ../shared/reference/clinical.md (LOINC 25(OH)D and calcium,
RxNorm warfarin / cholecalciferol, SNOMED CT conditions); everything else is text only, as
free-text products and problem-list entries are in real records.
"""

from __future__ import annotations

import uuid
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
PATIENT_ID = "bench-1"
SUBJECT = {"reference": f"Patient/{PATIENT_ID}"}


def _searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def _observation(n: int) -> dict:
    calcium = n % 4 == 3
    code, display, unit, value = (
        ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 9.1 + (n % 5) / 10)
        if calcium
        else (
            "62292-8",
            "25-hydroxyvitamin D2+D3 [Mass/volume] in Serum or Plasma",
            "ng/mL",
            14.0 + n * 1.5,
        )
    )
    return {
        "resourceType": "Observation",
        "id": f"obs-{n}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": SUBJECT,
        "effectiveDateTime": f"20{24 + n // 12}-{n % 12 + 1:02d}-15T08:30:00Z",
        "issued": f"20{24 + n // 12}-{n % 12 + 1:02d}-15T14:00:00Z",
        "valueQuantity": {"value": round(value, 1), "unit": unit, "system": UCUM, "code": unit},
    }


_OTHER_MEDS = [
    "Metformin 500 MG Oral Tablet",
    "Lisinopril 10 MG Oral Tablet",
    "Atorvastatin 20 MG Oral Tablet",
    "Amlodipine 5 MG Oral Tablet",
    "Levothyroxine 50 MCG Oral Tablet",
    "Omeprazole 20 MG Delayed Release Oral Capsule",
    "Sertraline 50 MG Oral Tablet",
    "Metoprolol succinate 50 MG Extended Release Oral Tablet",
    "Furosemide 20 MG Oral Tablet",
    "Gabapentin 300 MG Oral Capsule",
    "Tamsulosin 0.4 MG Oral Capsule",
    "Alendronate 70 MG Oral Tablet",
]


def _dosage(value: float, unit: str, per: str = "d") -> list[dict]:
    return [
        {
            "text": f"{value:g} {unit} every 1 {per}",
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": per}},
            "doseAndRate": [
                {"doseQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
            ],
        }
    ]


def _medication_request(n: int) -> dict:
    if n == 0:
        concept = {
            "coding": [
                {"system": RXNORM, "code": "855332", "display": "Warfarin Sodium 5 MG Oral Tablet"}
            ],
            "text": "Warfarin Sodium 5 MG Oral Tablet",
        }
        dosage = _dosage(1, "{tbl}")
    elif n == 1:
        concept = {
            "coding": [{"system": RXNORM, "code": "2418", "display": "Cholecalciferol"}],
            "text": "Cholecalciferol 1000 IU oral tablet",
        }
        dosage = _dosage(1000, "[iU]")
    elif n == 2:
        concept = {"text": "Calcium carbonate 1250 mg (500 mg elemental calcium) oral tablet"}
        dosage = _dosage(1, "{tbl}")
    else:
        text = _OTHER_MEDS[(n - 3) % len(_OTHER_MEDS)]
        concept = {"text": text}
        dosage = _dosage(1, "{tbl}")
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{n}",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": SUBJECT,
        "authoredOn": f"2025-{n % 12 + 1:02d}-01",
        "dosageInstruction": dosage,
    }


_CONDITIONS = [
    ("64859006", "Osteoporosis"),
    ("34713006", "Vitamin D deficiency"),
    (None, "Essential hypertension"),
    (None, "Type 2 diabetes mellitus without complications"),
    (None, "Atrial fibrillation"),
    (None, "Hyperlipidemia"),
    (None, "Gastro-oesophageal reflux disease"),
    (None, "Hypothyroidism"),
    (None, "Benign prostatic hyperplasia"),
    (None, "Major depressive disorder, single episode"),
]


def _condition(n: int) -> dict:
    code, text = _CONDITIONS[n]
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": SNOMED, "code": code, "display": text}]
    return {
        "resourceType": "Condition",
        "id": f"cond-{n}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": concept,
        "subject": SUBJECT,
        "onsetDateTime": f"20{10 + n}-03-01",
    }


def draft_d3_k2() -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": "draft-d3k2",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "text": "Vitamin D3 2000 IU + Vitamin K2 (menaquinone-7) 100 mcg oral capsule"
        },
        "subject": SUBJECT,
        "dosageInstruction": _dosage(1, "{capsule}"),
    }


def order_sign_request() -> dict:
    """The full-prefetch order-sign request (about 45 resources)."""
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/bench-doc",
            "patientId": PATIENT_ID,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft_d3_k2()}],
            },
        },
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": PATIENT_ID,
                "gender": "female",
                "birthDate": "1948-04-12",
            },
            "observations": _searchset([_observation(n) for n in range(20)]),
            "medicationRequests": _searchset([_medication_request(n) for n in range(15)]),
            "medicationStatements": _searchset([]),
            "conditions": _searchset([_condition(n) for n in range(10)]),
        },
    }


def prefetchless_request(fhir_server: str) -> dict:
    """A patient-view call with no prefetch: every key comes from `fhir_server`."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "context": {"userId": "Practitioner/bench-doc", "patientId": PATIENT_ID},
    }


def fhir_record() -> dict[str, dict]:
    """The same record as FHIR server replies, by stub route."""
    body = order_sign_request()["prefetch"]
    return {
        f"Patient/{PATIENT_ID}": body["patient"],
        "Observation": body["observations"],
        "MedicationRequest": body["medicationRequests"],
        "MedicationStatement": body["medicationStatements"],
        "Condition": body["conditions"],
    }
