"""Through HTTP: prefetch-only, FHIR-only, OperationOutcome-in-prefetch and mixed gathering give
the same facts; null keys give empty data and no query; 412 when data can't be had."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from cds_service import engine
from cds_service.facts.model import DrugClass

from .builders import (
    PATIENT_ID,
    PREFETCH_KEYS,
    condition,
    full_record,
    hook_request,
    medication_request,
    operation_outcome,
    searchset,
    vitamin_d,
)
from .fhir_stub import FhirStub, Reply

URL = "/cds-services/vitamin-d-patient-view"
ROUTES = {
    "patient": f"Patient/{PATIENT_ID}",
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}
FIXED_NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def captured(monkeypatch):
    """The Facts each call produced (the rules' input), with the call time fixed."""
    seen = []

    def capture(facts, guideline, patient_id):
        seen.append(dataclasses.replace(facts, now=FIXED_NOW))
        return []

    monkeypatch.setattr(engine, "cards_for", capture)
    return seen


@pytest.fixture
def stub():
    with FhirStub() as server:
        for key, route in ROUTES.items():
            server.add(route, full_record()[key])
        yield server


def call(client, body):
    reply = client.post(URL, data=json.dumps(body), content_type="application/json")
    return reply


def test_prefetch_only_reads_the_record_and_queries_nothing(client, captured, stub):
    reply = call(
        client, hook_request(prefetch=full_record(), fhir_server=stub.base_url, token="tok")
    )
    assert reply.status_code == 200
    assert stub.requests == []
    facts = captured[0]
    assert facts.patient.id == PATIENT_ID and facts.patient.sex == "female"
    assert [lvl.ng_ml for lvl in facts.vitamin_d_levels] == [12.0]
    assert [m.classes for m in facts.medications] == [frozenset({DrugClass.VKA})]
    assert [sorted(c.categories) for c in facts.conditions] == [["osteoporosis"]]


def _modes(stub_url):
    full = full_record()
    oo = operation_outcome()
    oo_bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": oo}]}
    return {
        "prefetch-only": ({**full}, set()),
        "fhir-only": (None, set(PREFETCH_KEYS)),
        "operation-outcome": ({key: oo for key in PREFETCH_KEYS}, set(PREFETCH_KEYS)),
        "mixed": (
            {
                "patient": full["patient"],
                "observations": oo_bundle,
                "conditions": full["conditions"],
            },
            {"observations", "medicationRequests", "medicationStatements"},
        ),
    }


def test_all_gathering_modes_give_the_same_facts(client, captured, stub):
    results = {}
    for mode, (prefetch, fetched) in _modes(stub.base_url).items():
        before = len(stub.requests)
        reply = call(
            client, hook_request(prefetch=prefetch, fhir_server=stub.base_url, token="tok-123")
        )
        assert reply.status_code == 200, (mode, reply.get_json())
        new = stub.requests[before:]
        assert {next(k for k, r in ROUTES.items() if q.path == r) for q in new} == fetched, mode
        assert all(q.authorization == "Bearer tok-123" for q in new), mode
        results[mode] = captured[-1]
    reference = results["prefetch-only"]
    assert reference.vitamin_d_levels and reference.medications and reference.conditions
    for mode, facts in results.items():
        assert facts == reference, mode


def test_fhir_queries_run_concurrently(make_app, settings, captured):
    client = make_app(settings).test_client()
    with FhirStub(delay_s=0.2) as server:
        for key, route in ROUTES.items():
            server.add(route, full_record()[key])
        assert call(client, hook_request(fhir_server=server.base_url)).status_code == 200
    spans = sorted((r.start, r.end) for r in server.requests)
    assert len(spans) == len(PREFETCH_KEYS)
    # Every query started before the first one finished: they overlapped rather than queued.
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    assert all(r.authorization is None for r in server.requests)  # no fhirAuthorization sent


def test_null_keys_are_empty_and_never_fetched(client, captured, stub):
    prefetch = {key: None for key in PREFETCH_KEYS}
    assert (
        call(client, hook_request(prefetch=prefetch, fhir_server=stub.base_url)).status_code == 200
    )
    assert stub.requests == []
    facts = captured[0]
    assert facts.patient is None and facts.vitamin_d_levels == () and facts.medications == ()


def test_empty_searchset_is_no_data_and_not_fetched(client, captured, stub):
    prefetch = {**full_record(), "observations": searchset()}
    assert (
        call(client, hook_request(prefetch=prefetch, fhir_server=stub.base_url)).status_code == 200
    )
    assert stub.requests == [] and captured[0].vitamin_d_levels == ()


@pytest.mark.parametrize(
    "reply,reason",
    [
        (Reply(status=500, body=operation_outcome()), "HTTP 500"),
        (Reply(status=200, body="<html>oops</html>"), "invalid JSON"),
        (Reply(status=401, body=operation_outcome()), "HTTP 401"),
    ],
)
def test_failing_fhir_server_is_412_naming_the_key(client, captured, reply, reason):
    with FhirStub() as server:
        server.add("Observation", reply)
        body = hook_request(
            prefetch={k: v for k, v in full_record().items() if k != "observations"},
            fhir_server=server.base_url,
        )
        answer = call(client, body)
    assert answer.status_code == 412
    assert answer.get_json()["details"] == [f"observations: {reason}"]
    assert captured == []


def test_slow_fhir_server_is_412_within_the_budget(make_app, settings, captured):
    client = make_app(settings.with_overrides(fhir_budget_s=0.3)).test_client()
    with FhirStub(delay_s=2.0) as server:
        for key, route in ROUTES.items():
            server.add(route, full_record()[key])
        answer = call(client, hook_request(fhir_server=server.base_url))
    assert answer.status_code == 412
    assert {d.split(":")[0] for d in answer.get_json()["details"]} == set(PREFETCH_KEYS)


def test_fhir_results_are_filtered_by_patient_code_and_status(client, captured):
    other = "someone-else"
    with FhirStub() as server:
        server.add(f"Patient/{PATIENT_ID}", full_record()["patient"])
        server.add(
            "Observation",
            searchset(
                vitamin_d(12.0, oid="mine"),
                vitamin_d(45.0, oid="theirs", pid=other),
                vitamin_d(8.0, oid="prelim", status="preliminary"),
                vitamin_d(3.0, oid="dihydroxy", code="2236-8"),
            ),
        )
        server.add(
            "MedicationRequest",
            searchset(
                medication_request(
                    "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="theirs", pid=other
                ),
                medication_request(
                    "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="stopped", status="stopped"
                ),
            ),
        )
        server.add("MedicationStatement", searchset())
        server.add("Condition", searchset(condition("64859006", "Osteoporosis", pid=other)))
        assert call(client, hook_request(fhir_server=server.base_url)).status_code == 200
    facts = captured[0]
    assert [lvl.observation_id for lvl in facts.vitamin_d_levels] == ["mine"]
    assert facts.medications == () and facts.conditions == ()
    assert facts.skipped >= 3  # the other patient's observation, order and condition


def test_included_medication_is_read_for_referenced_orders(client, captured):
    order = medication_request("x", "x", mid="ref")
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-w"}
    med = {
        "resourceType": "Medication",
        "id": "med-w",
        "code": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332",
                    "display": "Warfarin Sodium 5 MG Oral Tablet",
                }
            ]
        },
    }
    prefetch = {**full_record(), "medicationRequests": searchset(order)}
    with FhirStub() as server:
        included = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": order, "search": {"mode": "match"}},
                {"resource": med, "search": {"mode": "include"}},
            ],
        }
        server.add("MedicationRequest", included)
        del prefetch["medicationRequests"]
        assert (
            call(client, hook_request(prefetch=prefetch, fhir_server=server.base_url)).status_code
            == 200
        )
    assert server.requests[0].query.get("_include") == ["MedicationRequest:medication"]
    assert [m.classes for m in captured[0].medications] == [frozenset({DrugClass.VKA})]


def test_drafts_are_read_and_other_patients_drafts_dropped(make_app, settings, captured):
    client = make_app(settings).test_client()
    mine = medication_request(
        "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="d1", status="draft", pid=None
    )
    theirs = medication_request(
        "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="d2", status="draft", pid="x"
    )
    body = hook_request("vitamin-d-order-sign", prefetch=full_record(), drafts=[mine, theirs])
    reply = client.post(
        "/cds-services/vitamin-d-order-sign", data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200
    assert [d.id for d in captured[0].drafts] == ["d1"]
