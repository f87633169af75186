"""Real records through the served service (issue 15, item 6).

The HL7 examples, Synthea and SMART records in ../shared/data, per patient, through every
service, served by `cds-service serve` (real gunicorn) on one keep-alive connection, each call
after an early-refused one (a 404 with a 30 KB body, the case that used to lose calls):

- modes: `inline` (the record as sent, all prefetched: the reference), and three modes in which
  every MedicationRequest names its product only by `medicationReference` to a formulary
  Medication that only the FHIR stub serves: `prefetch` (all keys prefetched), `fhir-only`
  (nothing prefetched; the stub answers each search in HAPI FHIR pages, `{base}?_getpages=`),
  `mixed` (patient and conditions prefetched, observations an OperationOutcome, the rest
  absent). Each of them must give the topics the reference gives: the record decides them.
- no 5xx and no lost call, anywhere; deceased patients get no cards; an alive warfarin patient
  drafting a formulary vitamin K2 gets the interaction warning in every mode.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import requests

from .builders import PREFETCH_KEYS
from .fhir_stub import FhirStub, operation_outcome, searchset
from .server_process import ServerProcess
from .test_shared_data import resources_in

pytestmark = pytest.mark.slow

SERVICES = ("vitamin-d-patient-view", "vitamin-d-order-select", "vitamin-d-order-sign")
HOOKS = dict(zip(SERVICES, ("patient-view", "order-select", "order-sign"), strict=True))
MODES = ("prefetch", "fhir-only", "mixed")
INTERACTION = "vka-vitamin-k-interaction"
KEY_TYPES = {
    "observations": ("Observation",),
    "medicationRequests": ("MedicationRequest", "MedicationOrder"),
    "medicationStatements": ("MedicationStatement",),
    "conditions": ("Condition",),
}
SEARCH_PATHS = {
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}
FORMULARY_K2 = {
    "resourceType": "Medication",
    "id": "formulary-k2",
    "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.1937.99", "code": "F-K2"}]},
    "ingredient": [{"itemCodeableConcept": {"text": "Menaquinone-7 (vitamin K2) 100 mcg"}}],
}
REFUSED = b'{"pad": "' + b"p" * 30000 + b'"}'


def _subject(resource: dict) -> str | None:
    for field in ("subject", "patient"):
        ref = resource.get(field)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            m = re.search(r"(?:Patient/|urn:uuid:)([^/]+)$", ref["reference"])
            if m:
                return m.group(1)
    return None


def records(shared: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (patient id, {"patient": Patient | None, key: [resources]}), one per patient:
    a Synthea file, a SMART patient (its two files), each HL7 example subject."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted((shared / "synthea").glob("*.json")):
        groups[f"synthea/{path.stem[:24]}"].append(path)
    for path in sorted((shared / "smart-stu3-vitamin-d").glob("*.json")):
        groups[f"smart/{path.name.split('.')[0]}"].append(path)
    hl7 = sorted((shared / "hl7-examples").glob("*.json"))
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, paths in [*groups.items(), ("hl7", hl7)]:
        resources = [r for p in paths for r in resources_in(json.loads(p.read_text("utf-8")))]
        patients = {r["id"]: r for r in resources
                    if r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)}
        by_pid: dict[str, dict[str, Any]] = defaultdict(lambda: {k: [] for k in KEY_TYPES})
        for r in resources:
            pid = _subject(r)
            for key, types in KEY_TYPES.items():
                if r.get("resourceType") in types and pid:
                    by_pid[pid][key].append(r)
        for pid in sorted(set(by_pid) | set(patients)):
            if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", pid):
                continue
            record = copy.deepcopy(by_pid[pid])
            record["patient"] = patients.get(pid)
            label = name if name != "hl7" else f"hl7/{pid}"
            if label in out:
                label = f"{label}/{pid[:8]}"
            out[label] = (pid, record)
    return out


def formulary(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The record with every MedicationRequest's product moved to a Medication the FHIR server
    holds (`medicationReference` only, no display), and those Medications by id."""
    record = copy.deepcopy(record)
    medications = {}
    for n, order in enumerate(record["medicationRequests"]):
        concept = order.pop("medicationCodeableConcept", None)
        if not isinstance(concept, dict):
            continue
        mid = f"f{n}-{order.get('id', 'x')}"[:64]
        mid = re.sub(r"[^A-Za-z0-9\-.]", "-", mid)
        medications[mid] = {"resourceType": "Medication", "id": mid, "code": concept}
        order["medicationReference"] = {"reference": f"Medication/{mid}"}
    return record, medications


def drafts_for(pid: str) -> list[dict]:
    """A formulary K2 (Medication on the server only) and 50,000 IU D3 weekly."""
    d3 = {
        "resourceType": "MedicationRequest", "id": "draft-d3", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1606340",
                        "display": "Cholecalciferol 50000 UNT Oral Capsule"}],
            "text": "Cholecalciferol 50000 UNT Oral Capsule"},
        "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}},
                               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule"}}]}],
    }
    k2 = {
        "resourceType": "MedicationRequest", "id": "draft-k2", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationReference": {"reference": f"Medication/{FORMULARY_K2['id']}"},
    }
    return [d3, k2]


def request_body(service: str, pid: str, prefetch: dict | None, server: str) -> dict:
    context: dict[str, Any] = {"userId": "Practitioner/doc-1", "patientId": pid}
    if service != "vitamin-d-patient-view":
        drafts = drafts_for(pid)
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
        if service == "vitamin-d-order-select":
            context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    body: dict[str, Any] = {"hook": HOOKS[service], "hookInstance": "0b1d6c2e-7f4e-4c1a-9d8e-000000000015",
                            "context": context, "fhirServer": server,
                            "fhirAuthorization": {"access_token": "real-material", "token_type": "Bearer",
                                                  "expires_in": 300, "scope": "patient/*.read",
                                                  "subject": "vitd-cds"}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def prefetch_of(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"patient": record["patient"]}
    for key in KEY_TYPES:
        out[key] = searchset(record[key])
    return out


def serve(stub: FhirStub, n: int, pid: str, record: dict[str, Any], medications: dict) -> None:
    stub.add(f"Patient/{pid}", record["patient"] or operation_outcome(text="no such patient"))
    for key, path in SEARCH_PATHS.items():
        found = record[key]
        size = max(1, -(-len(found) // 3))  # up to three HAPI pages
        pages = [found[i:i + size] for i in range(0, len(found), size)] or [[]]
        stub.add_hapi_pages(path, pages, cache_id=f"r{n}-{key}", query={"patient": pid})
    for mid, medication in medications.items():
        stub.add(f"Medication/{mid}", medication)
    stub.add(f"Medication/{FORMULARY_K2['id']}", FORMULARY_K2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    env = {"CDS_AUTH_DISABLED": "1", "DATABASE_URL": f"sqlite:///{tmp / 'store.sqlite3'}",
           "PROMETHEUS_MULTIPROC_DIR": "", "CDS_FHIR_BUDGET_S": "15", "REDIS_URL": ""}
    with ServerProcess(env=env, workers=2) as srv:
        yield srv


def test_real_records_through_every_service_in_every_gathering_mode(server, shared_data):
    table = records(shared_data)
    assert len(table) >= 18, sorted(table)  # 10 Synthea, 3 SMART, 6 HL7 example subjects
    session = requests.Session()  # one keep-alive connection for every call
    failures: list[str] = []
    lost = calls = 0
    by_record: dict[str, dict] = {}
    with FhirStub() as stub:
        for n, (name, (pid, record)) in enumerate(sorted(table.items())):
            on_server, medications = formulary(record)
            serve(stub, n, pid, on_server, medications)
            oo = operation_outcome()
            prefetches = {
                "inline": prefetch_of(record),
                "prefetch": prefetch_of(on_server),
                # a record without a Patient: the EHR says so (null), as in the other modes
                "fhir-only": None if record["patient"] else {"patient": None},
                "mixed": {"patient": on_server["patient"],
                          "observations": searchset([oo]),
                          "conditions": searchset(on_server["conditions"])},
            }
            for service in SERVICES:
                for mode, prefetch in prefetches.items():
                    body = json.dumps(request_body(service, pid, prefetch, stub.base_url))
                    try:
                        refused = session.post(f"{server.base_url}/cds-services/no-such-service",
                                               data=REFUSED, headers={"Content-Type": "application/json"},
                                               timeout=30)
                        reply = session.post(f"{server.base_url}/cds-services/{service}", data=body,
                                             headers={"Content-Type": "application/json"}, timeout=30)
                    except requests.ConnectionError:
                        lost += 1
                        continue
                    calls += 1
                    if refused.status_code != 404 or reply.status_code != 200:
                        failures.append(f"{name} {service} {mode}: {refused.status_code} "
                                        f"{reply.status_code} {reply.text[:200]}")
                        continue
                    found = sorted({c["source"]["topic"]["code"] for c in reply.json()["cards"]})
                    by_record.setdefault(name, {})[(service, mode)] = found
            by_record.setdefault(name, {})["deceased"] = bool(
                record["patient"] and (record["patient"].get("deceasedBoolean") is True
                                       or "deceasedDateTime" in record["patient"]))
            by_record[name]["warfarin"] = any(
                "855332" in json.dumps(r.get("medicationCodeableConcept", {})) and r.get("status") == "active"
                for r in record["medicationRequests"])
    assert lost == 0 and failures == [], (lost, failures[:5])
    assert calls == len(table) * len(SERVICES) * 4
    for name, seen in by_record.items():
        for service in SERVICES:
            reference = seen[(service, "inline")]
            for mode in MODES:
                assert seen[(service, mode)] == reference, (name, service, mode)
            if seen["deceased"]:
                assert reference == [], (name, service)
            elif seen["warfarin"] and service != "vitamin-d-patient-view":
                assert INTERACTION in reference, (name, service)
    assert sum(s["deceased"] for s in by_record.values()) == 2
    assert sum(s["warfarin"] and not s["deceased"] for s in by_record.values()) >= 1
    assert PREFETCH_KEYS  # the five keys the modes above split
