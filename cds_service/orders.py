"""FHIR R4 resources for the orders a card proposes, validated with `fhir.resources.R4B`.

A suggested MedicationRequest is `draft` / `order`, names the patient, codes a cholecalciferol
clinical drug by RxNorm with text (the public sandbox applies nothing else; `products.py` picks
it), and doses in whole tablets or capsules of it (strength × units = the dose, contract §4
"Suggested orders") with timing and `boundsDuration` for a course (clinical.md "FHIR dose").
A repeat or safety lab is a draft ServiceRequest coded in LOINC with its due date. Codes come
from knowledge/orderables.json.

Validation is per order, not per call (`build`): a resource is a function of its order (a
frozen finding, the same for every patient) and of values that are valid FHIR by construction
(a uuid4 id, dates from `date.isoformat()`, the patient's id, which the request schema already
holds to the FHIR id pattern and `build` checks again). So the first resource built for an order
in a process is validated in full, and later ones for the same order skip the 0.1 ms model
parse. The test suite validates every resource every fixture produces, in full.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from . import ids, products
from .guideline import Schedule
from .knowledge import load
from .rules.findings import LabOrder, MedicationOrder

UCUM = "http://unitsofmeasure.org"


class InvalidResource(Exception):
    """A resource we built does not validate: a programming error, never sent to a client."""


def _knowledge() -> dict:
    return load("orderables")


_UNIT_WORDS = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}
_TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def describe(schedule: Schedule) -> str:
    """'daily', 'once weekly', 'twice daily', 'once every 2 weeks', '3 times every 4 hours'."""
    unit = _UNIT_WORDS[schedule.every]
    times = _TIMES.get(schedule.frequency, f"{schedule.frequency} times")
    if schedule.period == 1:
        if schedule.every == "d" and schedule.frequency == 1:
            return "daily"
        adverb = {"d": "daily", "wk": "weekly", "mo": "monthly", "a": "yearly"}.get(schedule.every)
        return f"{times} {adverb}" if adverb else f"{times} every {unit}"
    return f"{times} every {_num(schedule.period)} {unit}s"


def _course(schedule: Schedule) -> str:
    if schedule.weeks is not None:
        return f" for {schedule.weeks} weeks"
    if schedule.duration is not None:
        value, unit = schedule.duration
        word = _UNIT_WORDS[unit] + ("" if value == 1 else "s")
        return f" for {_num(value)} {word}"
    if schedule.count is not None:
        return f" ({schedule.count} doses)"
    return ""


def _timing(schedule: Schedule, start: datetime | None) -> dict[str, Any]:
    repeat: dict[str, Any] = {
        "frequency": schedule.frequency,
        "period": schedule.period,
        "periodUnit": schedule.every,
    }
    if schedule.count is not None:
        repeat["count"] = schedule.count
    if schedule.weeks is not None:
        repeat["boundsDuration"] = {
            "value": schedule.weeks,
            "unit": "wk",
            "system": UCUM,
            "code": "wk",
        }
    elif schedule.duration is not None:
        value, unit = schedule.duration
        repeat["boundsDuration"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    elif start is not None:
        repeat["boundsPeriod"] = {"start": start.date().isoformat()}
    return {"repeat": repeat}


def medication_request(order: MedicationOrder, patient_id: str, now: datetime) -> dict[str, Any]:
    schedule = order.schedule
    product = products.for_dose(schedule.dose_iu, order.form)
    if product is None:
        raise InvalidResource(f"no product gives {schedule.dose_iu} IU exactly")
    start = None
    if order.starts_after_weeks:
        start = now + timedelta(weeks=order.starts_after_weeks)
    if start is not None and schedule.weeks is not None:
        raise InvalidResource("a delayed course is not supported")
    forms = _knowledge()["dose_forms"]
    form = forms[product.form]
    amount = f"{product.units} {form['unit'] if product.units == 1 else form['plural']}"
    dose = f"{schedule.dose_iu:,} IU ({amount} of {product.strength_iu:,} IU)"
    if schedule.count == 1:
        text = f"{dose} by mouth as a single dose"
    else:
        text = f"{dose} by mouth {describe(schedule)}{_course(schedule)}"
    if start is not None and schedule.weeks is None and schedule.duration is None:
        text += f", starting {start.date().isoformat()}"
    resource = {
        "resourceType": "MedicationRequest",
        "id": ids.uuid4_str(),
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": _knowledge()["rxnorm_system"],
                    "code": product.code,
                    "display": product.text,
                }
            ],
            "text": product.text,
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now.date().isoformat(),
        "dosageInstruction": [
            {
                "text": text,
                "timing": _timing(schedule, start),
                "route": {"text": "oral"},
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": product.units,
                            "unit": form["unit"],
                            "system": forms["system"],
                            "code": form["code"],
                        }
                    }
                ],
            }
        ],
    }
    return resource


def service_request(order: LabOrder, patient_id: str, now: datetime) -> dict[str, Any]:
    lab = _knowledge()["labs"][order.lab]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": ids.uuid4_str(),
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": _knowledge()["loinc_system"],
                    "code": lab["code"],
                    "display": lab["display"],
                }
            ],
            "text": lab["text"],
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now.date().isoformat(),
    }
    start = now + timedelta(days=order.due_in_days)
    if order.within_days is not None:
        resource["occurrencePeriod"] = {
            "start": start.date().isoformat(),
            "end": (start + timedelta(days=order.within_days)).date().isoformat(),
        }
    else:
        resource["occurrenceDateTime"] = start.date().isoformat()
    return resource


def lab_text(lab: str) -> str:
    return _knowledge()["labs"][lab]["text"]


_MODELS = {"MedicationRequest": MedicationRequest, "ServiceRequest": ServiceRequest}


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` unchanged if it validates as FHIR R4 (R4B models), else InvalidResource."""
    model = _MODELS[resource["resourceType"]]
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError; message names fields, not patient data
        raise InvalidResource(f"{resource['resourceType']} does not validate: {exc}") from None
    return resource


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_REMEMBERED = 4096  # distinct orders; more (orders copied from odd records) start over
_valid_orders: set[MedicationOrder | LabOrder] = set()
_valid_lock = threading.Lock()


def build(order: MedicationOrder | LabOrder, patient_id: str, now: datetime) -> dict[str, Any]:
    """The resource for `order`, validated in full unless this order already was (module doc)."""
    if isinstance(order, MedicationOrder):
        resource = medication_request(order, patient_id, now)
    else:
        resource = service_request(order, patient_id, now)
    if FHIR_ID.fullmatch(patient_id) is None:
        return validated(resource)  # a reference we cannot vouch for: every time
    if order not in _valid_orders:
        validated(resource)
        with _valid_lock:
            if len(_valid_orders) >= MAX_REMEMBERED:
                _valid_orders.clear()
            _valid_orders.add(order)
    return resource
