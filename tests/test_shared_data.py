"""Every file in ../shared/data (third-party FHIR and CDS Hooks material) is read without an
exception, and what it holds is recognised: warfarin by RxNorm 855332 (Synthea) and 114194 in a
contained Medication (HL7 medrx0331), osteoporosis, deceased patients, STU3 `unknown` labs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.facts import build_facts
from cds_service.facts.model import ConditionCategory, DrugClass
from cds_service.gather import Gathered

from .builders import PREFETCH_KEYS, hook_request

NOW = datetime(2026, 11, 25, tzinfo=UTC)
# Not FHIR records: the FHIR JSON Schema and the RxNorm name list (see test_facts_medications).
NOT_RECORDS = {"fhir.schema.r4-4.0.0.asymmetrik.json", "medications.json"}


def resources_in(node: Any) -> Iterator[dict]:
    """Every object with a resourceType, at any depth (Bundles, contained, prefetch maps)."""
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            yield node
        for value in node.values():
            yield from resources_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from resources_in(value)


def subject_ids(resources: list[dict]) -> set[str]:
    ids = {
        r["id"]
        for r in resources
        if r.get("resourceType") == "Patient" and isinstance(r.get("id"), str)
    }
    for r in resources:
        for field in ("subject", "patient"):
            ref = r.get(field)
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                m = re.search(r"(?:Patient/|urn:uuid:)([^/]+)$", ref["reference"])
                if m:
                    ids.add(m.group(1))
    return ids


def facts_for(resources: list[dict], patient_id: str, *, drafts: list[dict] | None = None):
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    meds = by_type.get("Medication", [])
    gathered = Gathered(
        resources={
            "patient": by_type.get("Patient", []),
            "observations": by_type.get("Observation", []),
            "medicationRequests": by_type.get("MedicationRequest", [])
            + by_type.get("MedicationOrder", [])
            + meds,
            "medicationStatements": by_type.get("MedicationStatement", []) + meds,
            "conditions": by_type.get("Condition", []),
        },
        fetched=(),
        skipped=0,
    )
    service = "vitamin-d-order-sign" if drafts is not None else "vitamin-d-patient-view"
    request = hook_request(service, pid=patient_id, drafts=drafts)
    return build_facts(request, gathered, service_id=service, now=NOW)


def record_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if p.name not in NOT_RECORDS)


def test_every_shared_file_is_read_without_an_exception(shared_data):
    files = record_files(shared_data)
    assert len(files) >= 60, files  # 10 Synthea + 5 STU3 + 40 HL7 + 11 CDS Hooks examples
    read = 0
    for path in files:
        resources = list(resources_in(json.loads(path.read_text(encoding="utf-8"))))
        for pid in sorted(subject_ids(resources)) or ["example"]:
            facts_for(resources, pid)
            facts_for(
                resources,
                pid,
                drafts=[r for r in resources if r["resourceType"] == "MedicationRequest"],
            )
            read += 1
    assert read >= len(files)


def synthea(shared_data: Path) -> dict[str, Any]:
    out = {}
    for path in sorted((shared_data / "synthea").glob("*.json")):
        resources = list(resources_in(json.loads(path.read_text(encoding="utf-8"))))
        pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        out[path.stem] = (resources, facts_for(resources, pid))
    return out


def test_synthea_warfarin_osteoporosis_and_deceased_are_recognised(shared_data):
    records = synthea(shared_data)
    assert len(records) == 10
    for name, (resources, facts) in records.items():
        active_warfarin = any(
            r["resourceType"] == "MedicationRequest"
            and r.get("status") == "active"
            and any(
                c.get("code") == "855332"
                for c in r.get("medicationCodeableConcept", {}).get("coding", [])
            )
            for r in resources
        )
        has_vka = any(m.has(DrugClass.VKA) for m in facts.medications)
        assert has_vka == active_warfarin, name
        osteoporosis = any(
            r["resourceType"] == "Condition"
            and any(c.get("code") == "64859006" for c in r.get("code", {}).get("coding", []))
            and r.get("clinicalStatus", {}).get("coding", [{}])[0].get("code") == "active"
            for r in resources
        )
        assert (ConditionCategory.OSTEOPOROSIS in facts.categories) == osteoporosis, name
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        assert facts.patient.deceased == (
            "deceasedDateTime" in patient or patient.get("deceasedBoolean") is True
        )
    # Promised by the data README: warfarin, osteoporosis, two deceased patients on warfarin.
    assert sum(any(m.has(DrugClass.VKA) for m in f.medications) for _, f in records.values()) >= 1
    assert sum(ConditionCategory.OSTEOPOROSIS in f.categories for _, f in records.values()) >= 1
    assert (
        sum(
            f.patient.deceased and any(m.has(DrugClass.VKA) for m in f.medications)
            for _, f in records.values()
        )
        == 2
    )


def test_hl7_contained_warfarin_114194_is_recognised(shared_data):
    order = json.loads((shared_data / "hl7-examples/MedicationRequest-medrx0331.json").read_text())
    pid = order["subject"]["reference"].split("/")[-1]
    drafts = [dict(order, status="draft")]
    facts = facts_for([], pid, drafts=drafts)
    (warfarin,) = facts.drafts
    assert warfarin.has(DrugClass.VKA)
    assert ("http://www.nlm.nih.gov/research/umls/rxnorm", "114194") in warfarin.codes
    on_file = facts_for([dict(order, status="active")], pid)
    assert [m.has(DrugClass.VKA) for m in on_file.medications] == [True]


def test_hl7_patient_without_birth_date_has_no_age(shared_data):
    patient = json.loads((shared_data / "hl7-examples/Patient-pat1.json").read_text())
    facts = facts_for([patient], patient["id"])
    assert facts.patient is not None and facts.patient.age_years is None


@pytest.mark.parametrize(
    "path",
    sorted(
        Path(__file__)
        .resolve()
        .parents[2]
        .joinpath("shared/data/smart-stu3-vitamin-d")
        .glob("*.json")
    ),
    ids=lambda p: p.name,
)
def test_stu3_unknown_status_levels_are_not_counted(path):
    resources = list(resources_in(json.loads(path.read_text(encoding="utf-8"))))
    levels = [
        r
        for r in resources
        if r["resourceType"] == "Observation"
        and any(c.get("code") == "1989-3" for c in r.get("code", {}).get("coding", []))
    ]
    assert levels and all(r.get("status") == "unknown" for r in levels)
    (pid,) = subject_ids(levels)
    assert facts_for(resources, pid).vitamin_d_levels == ()
    final = [dict(r, status="final") for r in levels]
    values = [lvl.ng_ml for lvl in facts_for(final, pid).vitamin_d_levels]
    assert values and all(v is not None and 5 <= v <= 52 for v in values)


def _post(client, service, body):
    return client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")


def test_spec_patient_view_request_is_answered_clearly(client, shared_data):
    body = json.loads((shared_data / "cds-hooks-examples/spec-patient-view-request.json").read_text())
    # Its fhirServer is a public host: never contact it from tests. Without a reachable server our
    # absent prefetch keys can't be had, so the answer is a 412 naming them, not a crash.
    body["fhirServer"] = "http://127.0.0.1:1/fhir"
    reply = _post(client, "vitamin-d-patient-view", body)
    assert reply.status_code == 412
    assert {d.split(":")[0] for d in reply.get_json()["details"]} >= {"patient", "observations"}


def test_hapi_example_request_gets_a_clear_400(client, shared_data):
    """Hook 'Hook Name', a prefixed patientId 'Patient/123' and no userId: not a valid request."""
    body = json.loads((shared_data / "cds-hooks-examples/hapi-CdsServiceRequestJson.json").read_text())
    reply = _post(client, "vitamin-d-order-select", body)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "invalid CDS Hooks request" and reply.get_json()["details"]


def test_spec_pagination_example_is_answered_clearly(client, shared_data):
    """Draft ids with U+2011 and an amoxicillin order: read without a crash. Its fhirServer is
    a public host, so it is swapped for a closed loopback port (tests never leave the machine)."""
    name = "cds-hooks-examples/spec-order-sign-request-prefetch-pagination.json"
    body = json.loads((shared_data / name).read_text())
    body["fhirServer"] = "http://127.0.0.1:1/fhir"
    reply = _post(client, "vitamin-d-order-sign", body)
    assert reply.status_code == 412  # none of our prefetch keys was sent, and no server answers
    assert {d.split(":")[0] for d in reply.get_json()["details"]} == set(PREFETCH_KEYS)
    body["prefetch"].update(dict.fromkeys(PREFETCH_KEYS))
    reply = _post(client, "vitamin-d-order-sign", body)
    assert reply.status_code == 200 and reply.get_json() == {"cards": []}  # amoxicillin: not ours


def test_library_order_sign_context_is_not_ours(client, shared_data):
    """A NutritionOrder and an STU3-shaped MedicationRequest with no vitamin D/K/VKA: no cards."""
    example = json.loads((shared_data / "cds-hooks-examples/library-order-sign-r4-context.json").read_text())
    body = {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": example["context"],
        "prefetch": dict.fromkeys(
            ("patient", "observations", "medicationRequests", "medicationStatements", "conditions")
        ),
    }
    reply = _post(client, "vitamin-d-order-sign", body)
    assert reply.status_code == 200 and reply.get_json() == {"cards": []}


def test_spec_prefetch_example_is_read_without_an_exception(client, shared_data):
    prefetch = json.loads((shared_data / "cds-hooks-examples/spec-prefetch-data-example.json").read_text())
    prefetch = prefetch.get("prefetch", prefetch)
    body = hook_request(prefetch=None)
    body["prefetch"] = {**dict.fromkeys(PREFETCH_KEYS), **prefetch}
    reply = _post(client, "vitamin-d-patient-view", body)
    # Its Patient has no id (a '...' placeholder instead), so it is not this patient's record.
    assert reply.status_code == 200 and reply.get_json() == {"cards": []}
