"""Where the picture's facts come from: a FHIR Bundle on disk (CLI, preview) or the FHIR server
of a SMART launch. Both end in `build_facts`, the one reader of FHIR content."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..facts import Facts, build_facts
from ..gather import Gathered, PrefetchKey
from ..knowledge import load

LOINC = "http://loinc.org"
SERVICE_ID = "vitamin-d-history"
HOOK = "history"

# FHIR resource type -> the gathered key build_facts reads it from.
_KEYS = {
    "Patient": ("patient",),
    "Observation": ("observations",),
    "MedicationRequest": ("medicationRequests",),
    "MedicationOrder": ("medicationRequests",),
    "MedicationStatement": ("medicationStatements",),
    "Medication": ("medicationRequests", "medicationStatements"),  # for references
    "Condition": ("conditions",),
}


class RecordError(ValueError):
    """The file or server content is not one patient's record we can draw."""


def _request(patient_id: str) -> dict[str, Any]:
    return {"hook": HOOK, "context": {"patientId": patient_id}}


def facts_from_resources(
    resources: list[Any], patient_id: str, *, now: datetime, skipped: int = 0
) -> Facts:
    grouped: dict[str, list[dict]] = {key: [] for keys in _KEYS.values() for key in keys}
    for resource in resources:
        if isinstance(resource, dict):
            for key in _KEYS.get(resource.get("resourceType"), ()):
                grouped[key].append(resource)
    gathered = Gathered(resources=grouped, fetched=(), skipped=skipped)
    return facts_from_gathered(gathered, patient_id, now=now)


def facts_from_gathered(gathered: Gathered, patient_id: str, *, now: datetime) -> Facts:
    return build_facts(_request(patient_id), gathered, service_id=SERVICE_ID, now=now)


def facts_from_bundle(
    bundle: Any, *, now: datetime, patient_id: str | None = None
) -> Facts:
    """Facts for the one patient of a FHIR Bundle (searchset, collection, transaction...)."""
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise RecordError("not a FHIR Bundle (resourceType must be Bundle)")
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        entries = []
    resources = [e.get("resource") for e in entries if isinstance(e, Mapping)]
    skipped = sum(1 for r in resources if not isinstance(r, dict))
    if patient_id is None:
        ids = {
            r.get("id")
            for r in resources
            if isinstance(r, dict) and r.get("resourceType") == "Patient"
        }
        ids.discard(None)
        if len(ids) != 1:
            raise RecordError(
                f"the Bundle must hold exactly one Patient with an id (found {len(ids)})"
            )
        (patient_id,) = ids
    return facts_from_resources(resources, str(patient_id), now=now, skipped=skipped)


def server_keys() -> tuple[PrefetchKey, ...]:
    """What the page reads from a FHIR server after a SMART launch (all statuses: history).

    No Patient read: the launch scopes do not include it and the picture does not need it.
    """
    labs = load("labs")
    codes = [c["code"] for c in (*labs["vitamin_d_25oh"]["accepted"], *labs["inr"]["codes"])]
    code_param = ",".join(f"{LOINC}|{code}" for code in codes)
    patient = "{{context.patientId}}"
    return (
        PrefetchKey("observations", f"Observation?patient={patient}&code={code_param}"),
        PrefetchKey(
            "medicationRequests",
            f"MedicationRequest?patient={patient}",
            include="_include=MedicationRequest:medication",
        ),
        PrefetchKey(
            "medicationStatements",
            f"MedicationStatement?patient={patient}",
            include="_include=MedicationStatement:medication",
        ),
    )


def server_request(patient_id: str, fhir_server: str, access_token: str) -> dict[str, Any]:
    """The request `gather` reads: no prefetch, so every key is fetched with the token."""
    return {
        **_request(patient_id),
        "fhirServer": fhir_server,
        "fhirAuthorization": {"access_token": access_token, "token_type": "Bearer"},
        "prefetch": {},
    }
