"""Referenced Medications (issue 15, item 3; contract §5 "A `medicationReference` is resolved…").

A `medicationReference` that is not contained and not in a Bundle already held is read with
`GET Medication/{id}` from `fhirServer` (bearer token, the call's budget, beside the other
reads, once per call); only when that fails is its `display` read as text. Drafts and orders
on file alike, in every gathering mode.
"""

from __future__ import annotations

import copy
import json

import pytest

from .builders import (
    PATIENT_ID,
    PREFETCH_KEYS,
    full_record,
    hook_request,
    medication_request,
    operation_outcome,
    searchset,
)
from .fhir_stub import FhirStub, Reply

ROUTES = {
    "patient": f"Patient/{PATIENT_ID}",
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}
INTERACTION = "vka-vitamin-k-interaction"

# A formulary Medication only the FHIR server holds: no display on the order, the product
# named only in the Medication's code text, or only in its ingredient.
BY_CODE_TEXT = {
    "resourceType": "Medication",
    "id": "form-k2",
    "code": {"text": "Menaquinone-7 100 MCG Oral Capsule"},
}
BY_INGREDIENT = {
    "resourceType": "Medication",
    "id": "form-k2",
    "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.1937.99", "code": "F-0815"}]},
    "ingredient": [{"itemCodeableConcept": {"text": "menaquinone-7"}, "isActive": True}],
}


def k2_draft(reference: str = "Medication/form-k2", display: str | None = None, mid="draft-k2"):
    draft = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "medicationReference": {"reference": reference},
    }
    if display:
        draft["medicationReference"]["display"] = display
    return draft


def modes():
    """The gathering modes: (prefetch, keys the FHIR server must be asked for)."""
    full = full_record()
    oo = operation_outcome()
    return {
        "prefetch-only": (full, set()),
        "fhir-only": (None, set(PREFETCH_KEYS)),
        "operation-outcome": ({k: oo for k in PREFETCH_KEYS}, set(PREFETCH_KEYS)),
        "mixed": (
            {"patient": full["patient"], "conditions": full["conditions"]},
            {"observations", "medicationRequests", "medicationStatements"},
        ),
    }


def topics(reply) -> list[str]:
    assert reply.status_code == 200, reply.get_json()
    return [c["source"]["topic"]["code"] for c in reply.get_json()["cards"]]


def post(client, service, body):
    return client.post(f"/cds-services/{service}", data=json.dumps(body),
                       content_type="application/json")


def serve_record(stub: FhirStub, record: dict | None = None) -> None:
    record = record or full_record()
    for key, route in ROUTES.items():
        stub.add(route, record[key])


@pytest.mark.parametrize("medication", [BY_CODE_TEXT, BY_INGREDIENT], ids=["code-text", "ingredient"])
@pytest.mark.parametrize("mode", list(modes()))
@pytest.mark.parametrize("service", ["vitamin-d-order-select", "vitamin-d-order-sign"])
def test_a_warfarin_patient_drafting_a_formulary_k2_gets_the_warning(client, service, mode, medication):
    prefetch, fetched = modes()[mode]
    with FhirStub() as stub:
        serve_record(stub)
        stub.add("Medication/form-k2", medication)
        body = hook_request(service, prefetch=prefetch, fhir_server=stub.base_url, token="tok-9",
                            drafts=[k2_draft()])
        found = topics(post(client, service, body))
        seen = stub.requests
    assert INTERACTION in found
    reads = [r for r in seen if r.path == "Medication/form-k2"]
    assert len(reads) == 1 and reads[0].authorization == "Bearer tok-9"
    assert {r.path for r in seen} - {"Medication/form-k2"} == {ROUTES[k] for k in fetched}


def test_without_the_read_the_same_draft_gets_no_warning(client):
    """The product is named nowhere but on the FHIR server: the read is what finds it."""
    with FhirStub() as stub:
        stub.add("Medication/form-k2", Reply(status=404, body=operation_outcome()))
        body = hook_request("vitamin-d-order-sign", prefetch=full_record(),
                            fhir_server=stub.base_url, drafts=[k2_draft()])
        assert INTERACTION not in topics(post(client, "vitamin-d-order-sign", body))


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=404, body=operation_outcome()),
        Reply(status=500, body=operation_outcome()),
        Reply(body=operation_outcome()),  # 200 with an OperationOutcome
        Reply(body={"resourceType": "Medication", "id": "someone-else", "code": {"text": "x"}}),
        Reply(body="<html>"),
        Reply(body={"resourceType": "Medication", "id": "form-k2"}, delay_s=3.0),  # past budget
    ],
    ids=["404", "500", "outcome", "other-id", "not-json", "too-slow"],
)
def test_a_failed_read_falls_back_to_the_display(make_app, settings, reply):
    client = make_app(settings.with_overrides(fhir_budget_s=0.5)).test_client()
    with FhirStub() as stub:
        stub.add("Medication/form-k2", reply)
        body = hook_request("vitamin-d-order-sign", prefetch=full_record(), fhir_server=stub.base_url,
                            drafts=[k2_draft(display="Vitamin K2 (MK-7) 100 mcg capsule")])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))


def test_an_active_order_referencing_a_formulary_k2_meets_a_drafted_warfarin(client):
    record = full_record()
    on_file = k2_draft(mid="k2-on-file")
    on_file["status"] = "active"
    record["medicationRequests"] = searchset(on_file)
    warfarin = medication_request("855332", "Warfarin Sodium 5 MG Oral Tablet", mid="draft-w",
                                  status="draft", dose=1, unit="{tbl}")
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=record, fhir_server=stub.base_url,
                            drafts=[warfarin])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))
        assert [r.path for r in stub.requests] == ["Medication/form-k2"]


def test_each_medication_is_read_once_per_call(client):
    record = full_record()
    statement = {**k2_draft(mid="st-1"), "resourceType": "MedicationStatement", "status": "active"}
    record["medicationStatements"] = searchset(statement)
    drafts = [k2_draft(mid="d1"), k2_draft(mid="d2"),
              k2_draft("Medication/form-k2/_history/3", mid="d3")]
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=record, fhir_server=stub.base_url,
                            drafts=drafts)
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))
        assert [r.path for r in stub.requests] == ["Medication/form-k2"]


def test_contained_and_held_medications_are_not_read(client):
    contained = k2_draft("#m1", mid="d1")
    contained["contained"] = [{**BY_CODE_TEXT, "id": "m1"}]
    record = full_record()
    record["medicationRequests"] = copy.deepcopy(record["medicationRequests"])
    record["medicationRequests"]["entry"].append(
        {"fullUrl": "Medication/held", "resource": {**BY_CODE_TEXT, "id": "held"},
         "search": {"mode": "include"}}
    )
    with FhirStub() as stub:
        body = hook_request("vitamin-d-order-sign", prefetch=record, fhir_server=stub.base_url,
                            drafts=[contained, k2_draft("Medication/held", mid="d2")])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))
        assert stub.requests == []


@pytest.mark.parametrize(
    "reference",
    ["https://elsewhere.example/fhir/Medication/form-k2", "urn:uuid:8f3a1c2e-0000-4000-8000-000000000001",
     "Medication/../../admin", "Substance/form-k2"],
)
def test_references_off_the_server_are_never_read(client, reference):
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=full_record(), fhir_server=stub.base_url,
                            drafts=[k2_draft(reference, display="Vitamin K2 100 mcg")])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))  # display read
        assert stub.requests == []


def test_an_absolute_reference_on_the_server_is_read(client):
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=full_record(), fhir_server=stub.base_url,
                            drafts=[k2_draft(f"{stub.base_url}/Medication/form-k2")])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))
        assert [r.path for r in stub.requests] == ["Medication/form-k2"]


def test_the_read_runs_beside_the_other_reads(make_app, settings):
    client = make_app(settings).test_client()
    prefetch = {k: v for k, v in full_record().items() if k != "observations"}
    with FhirStub(delay_s=0.3) as stub:
        serve_record(stub)
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=prefetch, fhir_server=stub.base_url,
                            drafts=[k2_draft()])
        assert INTERACTION in topics(post(client, "vitamin-d-order-sign", body))
        spans = {r.path: (r.start, r.end) for r in stub.requests}
    assert set(spans) == {"Observation", "Medication/form-k2"}
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert max(a_start, b_start) < min(a_end, b_end)  # overlapped, not one after the other


def test_an_order_fetched_from_the_server_has_its_medication_read_too(client):
    record = full_record()
    fetched_order = k2_draft(mid="k2-srv")
    fetched_order["status"] = "active"
    record["medicationRequests"] = searchset(
        medication_request("855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1", dose=1,
                           unit="{tbl}"),
        fetched_order,
    )
    with FhirStub() as stub:
        serve_record(stub, record)
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        prefetch = {k: v for k, v in record.items() if k != "medicationRequests"}
        body = hook_request("vitamin-d-patient-view", prefetch=prefetch, fhir_server=stub.base_url)
        assert INTERACTION in topics(post(client, "vitamin-d-patient-view", body))
        assert sorted(r.path for r in stub.requests) == ["Medication/form-k2", "MedicationRequest"]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([k2_draft("Medication/a"), k2_draft("Medication/a"), k2_draft("#c")], ["Medication/a"]),
        ([{"resourceType": ["MedicationRequest"], "medicationReference": {"reference": "Medication/a"}}], []),
        ([{"resourceType": "MedicationRequest", "medicationReference": "Medication/a"}], []),
        ([{"resourceType": "MedicationRequest", "medicationReference": {"reference": 7}}], []),
        ([{"resourceType": "Observation", "medicationReference": {"reference": "Medication/a"}}], []),
        ([None, "text", 3], []),
    ],
)
def test_references_are_read_from_odd_shapes_without_failing(resources, expected):
    from cds_service.gather import medication_references

    assert medication_references(resources) == expected


def test_reads_per_call_are_capped_and_the_rest_fall_back_to_display(make_app, settings):
    from dataclasses import replace

    app = make_app(settings)
    runtime = app.extensions["vitd.runtime"]
    runtime.gather_settings = replace(runtime.gather_settings, max_medication_reads=3)
    drafts = [k2_draft(f"Medication/m{n}", display="Vitamin K2 100 mcg", mid=f"d{n}")
              for n in range(8)]
    with FhirStub() as stub:
        for n in range(8):
            stub.add(f"Medication/m{n}", {**BY_CODE_TEXT, "id": f"m{n}"})
        body = hook_request("vitamin-d-order-sign", prefetch=full_record(), fhir_server=stub.base_url,
                            drafts=drafts)
        assert INTERACTION in topics(post(app.test_client(), "vitamin-d-order-sign", body))
        assert sorted(r.path for r in stub.requests) == ["Medication/m0", "Medication/m1", "Medication/m2"]


def test_drafts_are_read_first_so_the_cap_never_leaves_a_draft_unread(make_app, settings):
    from dataclasses import replace

    app = make_app(settings)
    runtime = app.extensions["vitd.runtime"]
    runtime.gather_settings = replace(runtime.gather_settings, max_medication_reads=3)
    record = full_record()
    on_file = []
    for n in range(5):
        order = k2_draft(f"Medication/old{n}", mid=f"o{n}")
        order["status"] = "active"
        on_file.append(order)
    warfarin = medication_request("855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1")
    record["medicationRequests"] = searchset(*on_file, warfarin)
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-order-sign", prefetch=record, fhir_server=stub.base_url,
                            drafts=[k2_draft()])
        post(app.test_client(), "vitamin-d-order-sign", body)
        paths = [r.path for r in stub.requests]
    assert "Medication/form-k2" in paths and len(paths) == 3


@pytest.mark.parametrize("status", ["stopped", "completed", "cancelled", "entered-in-error"])
def test_products_of_past_uses_are_not_read(client, status):
    record = full_record()
    past = k2_draft(mid="past")
    past["status"] = status
    record["medicationStatements"] = searchset({**past, "resourceType": "MedicationStatement"})
    record["medicationRequests"] = searchset(past)
    with FhirStub() as stub:
        stub.add("Medication/form-k2", BY_CODE_TEXT)
        body = hook_request("vitamin-d-patient-view", prefetch=record, fhir_server=stub.base_url)
        assert post(client, "vitamin-d-patient-view", body).status_code == 200
        assert stub.requests == []
