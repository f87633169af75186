"""gather(): CDS Hooks 2.0 prefetch rules, parallel FHIR fetches, pagination, failures (412 data).

The FHIR server is the loopback stub in fhir_stub.py; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cds_service import ssrf
from cds_service.fhir_client import FetchError, FhirClient, check_url, next_link
from cds_service.gather import (
    DataUnavailable,
    GatherSettings,
    PrefetchKey,
    ServerRefused,
    gather,
    render_template,
)

from .fhir_stub import FhirStub, Reply, operation_outcome, searchset

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cds-hooks-examples"

PATIENT_ID = "pat-4711"
TOKEN = "secret-access-token-0815"
ABSENT = object()  # marks a prefetch key that is not in the request at all

LOINC_25OHD = "http://loinc.org|62292-8,http://loinc.org|1989-3"
KEYS = (
    PrefetchKey("patient", "Patient/{{context.patientId}}"),
    PrefetchKey("observations", "Observation?patient={{context.patientId}}&code=" + LOINC_25OHD),
    PrefetchKey(
        "medicationRequests",
        "MedicationRequest?patient={{context.patientId}}&status=active",
        include="_include=MedicationRequest:medication",
    ),
    PrefetchKey("medicationStatements", "MedicationStatement?patient={{context.patientId}}"),
    PrefetchKey("conditions", "Condition?patient={{context.patientId}}"),
)
OBS_KEY = (KEYS[1],)
FAST = GatherSettings(budget_s=2.0)


def res(resource_type: str, rid: str) -> dict:
    return {"resourceType": resource_type, "id": rid}


SERVER_DATA = {
    "Patient/" + PATIENT_ID: res("Patient", PATIENT_ID),
    "Observation": searchset([res("Observation", "srv-obs")]),
    "MedicationRequest": searchset([res("MedicationRequest", "srv-mr")]),
    "MedicationStatement": searchset([res("MedicationStatement", "srv-ms")]),
    "Condition": searchset([res("Condition", "srv-cond")]),
}
PATHS = {
    "patient": "Patient/" + PATIENT_ID,
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}


def make_request(
    prefetch: dict | None = None,
    *,
    server: Any = ABSENT,
    token: str | None = TOKEN,
    patient_id: str = PATIENT_ID,
) -> dict:
    request: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/doc-1", "patientId": patient_id},
    }
    if server is not ABSENT:
        request["fhirServer"] = server
    if token is not None:
        request["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer"}
    if prefetch is not None:
        request["prefetch"] = {k: v for k, v in prefetch.items() if v is not ABSENT}
    return request


def ids(resources: list[dict]) -> list[str]:
    return [r.get("id") for r in resources]


def serve_all(stub: FhirStub) -> None:
    for path, body in SERVER_DATA.items():
        stub.add(path, body)


@pytest.fixture
def stub():
    with FhirStub() as running:
        yield running


@pytest.fixture
def fhir():
    """The FhirClient under test (conftest's `client` is the Flask test client)."""
    with FhirClient(max_workers=8) as fhir_client:
        yield fhir_client


# --- template rendering -------------------------------------------------------------------

CTX = {
    "userId": "Practitioner/doc-1",
    "patientId": "123",
    "encounterId": "enc-9",
    "draftOrders": {"resourceType": "Bundle"},
    "selections": ["MedicationRequest/1"],
    "count": 5,
    "flag": True,
}


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("Patient/{{context.patientId}}", {}, "Patient/123"),
        ("Patient/{{ context.patientId }}", {}, "Patient/123"),
        (
            "Observation?patient={{context.patientId}}&encounter={{context.encounterId}}",
            {},
            "Observation?patient=123&encounter=enc-9",
        ),
        ("Observation?_count={{context.count}}", {}, "Observation?_count=5"),
        ("Patient", {}, "Patient"),  # no token: unchanged
        # injection attempts stay one encoded value
        (
            "Observation?patient={{context.patientId}}",
            {"patientId": "1&_count=1000"},
            "Observation?patient=1%26_count%3D1000",
        ),
        (
            "Patient/{{context.patientId}}",
            {"patientId": "../Practitioner/1"},
            "Patient/..%2FPractitioner%2F1",
        ),
        ("Patient/{{context.patientId}}", {"patientId": "a?b#c d"}, "Patient/a%3Fb%23c%20d"),
        ("Patient/{{context.patientId}}", {"patientId": "a%2Fb"}, "Patient/a%252Fb"),
        (
            "Patient/{{context.patientId}}",
            {"patientId": "x\r\nHost: evil"},
            "Patient/x%0D%0AHost%3A%20evil",
        ),
        (
            "Patient/{{context.patientId}}",
            {"patientId": "{{context.encounterId}}"},
            "Patient/%7B%7Bcontext.encounterId%7D%7D",
        ),  # no second expansion
        ("Patient/{{context.patientId}}", {"patientId": "rx\u20111"}, "Patient/rx%E2%80%911"),
        # user tokens from context.userId
        ("Practitioner/{{userPractitionerId}}", {}, "Practitioner/doc-1"),
        (
            "PractitionerRole/{{userPractitionerRoleId}}",
            {"userId": "PractitionerRole/r-2"},
            "PractitionerRole/r-2",
        ),
        ("Patient/{{userPatientId}}", {"userId": "Patient/p-3"}, "Patient/p-3"),
        (
            "RelatedPerson/{{userRelatedPersonId}}",
            {"userId": "RelatedPerson/rp-4"},
            "RelatedPerson/rp-4",
        ),
        # unresolvable
        ("Practitioner/{{userPractitionerId}}", {"userId": "PractitionerRole/r-2"}, None),
        ("Practitioner/{{userPractitionerId}}", {"userId": "Practitioner"}, None),
        ("Practitioner/{{userPractitionerId}}", {"userId": "Practitioner/a/b"}, None),
        ("Practitioner/{{userPractitionerId}}", {"userId": "Practitioner/"}, None),
        ("Practitioner/{{userPractitionerId}}", {"userId": "Device/d-1"}, None),
        ("Practitioner/{{userPractitionerId}}", {"userId": 7}, None),
        ("Patient/{{context.patientId}}", {"patientId": ""}, None),
        ("Patient/{{context.patientId}}", {"patientId": "   "}, None),
        ("Patient/{{context.patientId}}", {"patientId": ".."}, None),
        ("Patient/{{context.patientId}}", {"patientId": "."}, None),
        ("Patient/{{context.patientId}}", {"patientId": None}, None),
        ("Patient/{{context.flag}}", {}, None),  # booleans are not ids
        ("Bundle/{{context.draftOrders}}", {}, None),  # not a primitive
        ("X/{{context.selections}}", {}, None),
        ("Encounter/{{context.missing}}", {}, None),
        ("Patient/{{context.patientId.id}}", {}, None),  # nested path
        ("Patient/{{Patient.id}}", {}, None),  # pre-1.0 token syntax
        ("Patient/{{context.patientId}", {}, None),  # unbalanced
        ("Patient/{{}}", {}, None),
    ],
)
def test_render_template(template: str, context: dict, expected: str | None) -> None:
    assert render_template(template, {"context": {**CTX, **context}}) == expected


def test_hostile_patient_id_reaches_the_server_as_one_value(stub, fhir) -> None:
    hostile = "1&_count=1000/../Practitioner?x=#y"
    stub.add("Patient/1%26_count%3D1000%2F..%2FPractitioner%3Fx%3D%23y", res("Patient", "p"))
    stub.add("Observation", searchset([]))
    request = make_request({}, server=stub.base_url, patient_id=hostile)
    result = gather(request, KEYS[:2], FAST, fhir)
    assert ids(result.resources["patient"]) == ["p"]
    by_path = {r.path: r for r in stub.requests}
    assert by_path["Observation"].query["patient"] == [hostile]
    assert set(by_path["Observation"].query) == {"patient", "code"}


@pytest.mark.parametrize("request_", [{}, {"context": "Patient/1"}, {"context": None}, []])
def test_render_template_without_usable_context(request_: Any) -> None:
    assert render_template("Patient/{{context.patientId}}", request_) is None


# --- prefetch rules, one key ----------------------------------------------------------------

PF_OBS = res("Observation", "pf-obs")
OUTCOME_ENTRY = {"resource": operation_outcome(), "search": {"mode": "outcome"}}


@pytest.mark.parametrize(
    ("value", "expected_ids", "fetched", "skipped"),
    [
        pytest.param(searchset([PF_OBS]), ["pf-obs"], False, 0, id="searchset"),
        pytest.param(PF_OBS, ["pf-obs"], False, 0, id="single resource"),
        pytest.param(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": PF_OBS}]},
            ["pf-obs"],
            False,
            0,
            id="collection",
        ),
        pytest.param(
            {"resourceType": "Bundle", "entry": [{"resource": PF_OBS}]},
            ["pf-obs"],
            False,
            0,
            id="bundle without type",
        ),
        pytest.param(
            {"resourceType": "Bundle", "entry": {"resource": PF_OBS}},
            ["pf-obs"],
            False,
            0,
            id="entry as one object",
        ),
        pytest.param(
            {"resourceType": "Bundle", "type": "searchset"}, [], False, 0, id="bundle without entry"
        ),
        pytest.param(searchset([]), [], False, 0, id="empty searchset is no data"),
        pytest.param(None, [], False, 0, id="null is no data"),
        pytest.param(ABSENT, ["srv-obs"], True, 0, id="absent is fetched"),
        pytest.param(operation_outcome(), ["srv-obs"], True, 0, id="OperationOutcome fetched"),
        pytest.param(
            {"resourceType": "Bundle", "entry": [OUTCOME_ENTRY, OUTCOME_ENTRY]},
            ["srv-obs"],
            True,
            0,
            id="bundle of only outcomes fetched",
        ),
        pytest.param(
            {"resourceType": "Bundle", "entry": [OUTCOME_ENTRY, {"resource": PF_OBS}]},
            ["pf-obs"],
            False,
            0,
            id="outcome entries dropped",
        ),
        pytest.param(
            {
                "resourceType": "Bundle",
                "entry": [
                    {"resource": PF_OBS, "search": {"mode": "match"}},
                    {"resource": res("Medication", "med-1"), "search": {"mode": "include"}},
                ],
            },
            ["pf-obs", "med-1"],
            False,
            0,
            id="include-mode entries kept",
        ),
        pytest.param("oops", ["srv-obs"], True, 1, id="string value"),
        pytest.param(42, ["srv-obs"], True, 1, id="number value"),
        pytest.param([PF_OBS], ["srv-obs"], True, 1, id="list value"),
        pytest.param({"id": "x"}, ["srv-obs"], True, 1, id="object without resourceType"),
        pytest.param(
            {
                "resourceType": "Bundle",
                "entry": [
                    {"resource": "Observation/1"},
                    5,
                    {},
                    {"resource": {"id": "no-type"}},
                    {"resource": {"resourceType": 3}},
                    {"resource": PF_OBS},
                ],
            },
            ["pf-obs"],
            False,
            5,
            id="odd entries skipped",
        ),
        pytest.param(
            {"resourceType": "Bundle", "entry": "nope"}, [], False, 1, id="entry not a list"
        ),
    ],
)
def test_prefetch_rules(stub, fhir, value, expected_ids, fetched, skipped) -> None:
    serve_all(stub)
    request = make_request({"observations": value}, server=stub.base_url)
    result = gather(request, OBS_KEY, FAST, fhir)
    assert ids(result.resources["observations"]) == expected_ids
    assert result.fetched == (("observations",) if fetched else ())
    assert result.skipped == skipped
    assert len(stub.requests) == (1 if fetched else 0)


@pytest.mark.parametrize("prefetch", [None, "not-an-object", ["x"]])
def test_prefetch_missing_or_not_an_object_fetches_everything(stub, fhir, prefetch) -> None:
    serve_all(stub)
    request = make_request(server=stub.base_url)
    if prefetch is not None:
        request["prefetch"] = prefetch
    result = gather(request, KEYS, FAST, fhir)
    assert set(result.fetched) == set(PATHS)


# --- several keys ------------------------------------------------------------------------------

ALL_PREFETCHED = {
    "patient": res("Patient", PATIENT_ID),
    "observations": searchset([PF_OBS]),
    "medicationRequests": searchset([res("MedicationRequest", "pf-mr")]),
    "medicationStatements": searchset([]),
    "conditions": None,
}


PREFETCHED_IDS = {
    "patient": [PATIENT_ID],
    "observations": ["pf-obs"],
    "medicationRequests": ["pf-mr"],
    "medicationStatements": [],
    "conditions": [],
}
SERVER_IDS = {
    "patient": [PATIENT_ID],
    "observations": ["srv-obs"],
    "medicationRequests": ["srv-mr"],
    "medicationStatements": ["srv-ms"],
    "conditions": ["srv-cond"],
}


@pytest.mark.parametrize(
    ("prefetch", "expected_fetched"),
    [
        pytest.param(ALL_PREFETCHED, set(), id="prefetch only"),
        pytest.param({}, set(PATHS), id="fhir only"),
        pytest.param(
            {**ALL_PREFETCHED, "observations": ABSENT, "medicationRequests": operation_outcome()},
            {"observations", "medicationRequests"},
            id="mixed",
        ),
    ],
)
def test_keys_fetched_only_when_needed(stub, fhir, prefetch, expected_fetched) -> None:
    serve_all(stub)
    result = gather(make_request(prefetch, server=stub.base_url), KEYS, FAST, fhir)
    assert set(result.fetched) == expected_fetched
    assert sorted(r.path for r in stub.requests) == sorted(PATHS[k] for k in expected_fetched)
    for key in PATHS:
        source = SERVER_IDS if key in expected_fetched else PREFETCHED_IDS
        assert ids(result.resources[key]) == source[key], key


def test_fetches_run_in_parallel_with_bearer_token(fhir) -> None:
    with FhirStub(delay_s=0.2) as stub:
        serve_all(stub)
        result = gather(make_request(server=stub.base_url), KEYS, FAST, fhir)
    recorded = stub.requests
    assert len(recorded) == len(KEYS)
    # every key was in flight at the same moment: the queries overlapped, not queued
    assert max(r.start for r in recorded) < min(r.end for r in recorded)
    assert {r.authorization for r in recorded} == {f"Bearer {TOKEN}"}
    assert {r.accept for r in recorded} == {"application/fhir+json"}
    by_path = {r.path: r for r in recorded}
    assert by_path["Observation"].query["patient"] == [PATIENT_ID]
    assert by_path["Observation"].query["code"] == [LOINC_25OHD]
    assert by_path["MedicationRequest"].query["_include"] == ["MedicationRequest:medication"]
    assert "_include" not in by_path["Condition"].query
    assert ids(result.resources["patient"]) == [PATIENT_ID]
    assert ids(result.resources["conditions"]) == ["srv-cond"]


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(ABSENT, id="no fhirAuthorization"),
        pytest.param({"token_type": "Bearer"}, id="no access_token"),
        pytest.param({"access_token": ""}, id="empty access_token"),
        pytest.param("Bearer x", id="not an object"),
    ],
)
def test_no_token_no_authorization_header(stub, fhir, auth) -> None:
    serve_all(stub)
    request = make_request({}, server=stub.base_url, token=None)
    if auth is not ABSENT:
        request["fhirAuthorization"] = auth
    gather(request, OBS_KEY, FAST, fhir)
    assert [r.authorization for r in stub.requests] == [None]


def test_cookies_from_a_fhir_server_are_never_sent_back(stub, fhir) -> None:
    """The client is shared by all patients and EHRs: no state may carry over."""
    stub.add("Observation", Reply(body=searchset([]), headers={"Set-Cookie": "s=abc; Path=/"}))
    for _ in range(2):
        gather(make_request({}, server=stub.base_url), OBS_KEY, FAST, fhir)
    assert [r.cookie for r in stub.requests] == [None, None]


@pytest.mark.parametrize("server", [ABSENT, None, "", "   ", 42])
def test_no_fhir_server_names_every_key_to_fetch(fhir, server) -> None:
    prefetch = {
        "patient": res("Patient", PATIENT_ID),
        "observations": ABSENT,
        "medicationRequests": operation_outcome(),
        "medicationStatements": None,
        "conditions": searchset([], next_url="https://ehr.example/fhir/Condition?page=2"),
    }
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request(prefetch, server=server), KEYS, FAST, fhir)
    assert caught.value.missing == {
        "observations": "no fhirServer",
        "medicationRequests": "no fhirServer",
        "conditions": "no fhirServer",
    }


def test_no_fhir_server_is_fine_when_nothing_needs_fetching(fhir) -> None:
    result = gather(make_request(ALL_PREFETCHED), KEYS, FAST, fhir)
    assert result.fetched == ()
    assert ids(result.resources["patient"]) == [PATIENT_ID]
    assert result.resources["conditions"] == []


# --- server failures --------------------------------------------------------------------------

BIG = json.dumps(searchset([res("Observation", "x" * 2000)]))
SMALL_CAP = replace(FAST, max_response_bytes=1000)


@pytest.mark.parametrize(
    ("reply", "settings", "reason"),
    [
        pytest.param(Reply(status=500, body=operation_outcome()), FAST, "HTTP 500", id="500"),
        pytest.param(Reply(status=401), FAST, "HTTP 401", id="401"),
        pytest.param(Reply(status=404, body=operation_outcome()), FAST, "not found", id="404"),
        pytest.param(Reply(body="{not json"), FAST, "invalid JSON", id="invalid JSON"),
        pytest.param(Reply(body=b"\xff\xfe\x00"), FAST, "invalid JSON", id="not UTF-8"),
        pytest.param(Reply(body="[" * 100_000), FAST, "nested too deeply", id="too deeply nested"),
        pytest.param(Reply(body=""), FAST, "invalid JSON", id="empty body"),
        pytest.param(Reply(body=[1, 2]), FAST, "not a FHIR resource", id="JSON list"),
        pytest.param(Reply(body={"error": "x"}), FAST, "not a FHIR resource", id="no resourceType"),
        pytest.param(
            Reply(body=operation_outcome("information")),
            FAST,
            "OperationOutcome",
            id="OperationOutcome body",
        ),
        pytest.param(
            Reply(body={"resourceType": "Bundle", "entry": [OUTCOME_ENTRY]}),
            FAST,
            "OperationOutcome",
            id="error outcome in searchset",
        ),
        pytest.param(
            Reply(
                body={
                    "resourceType": "Bundle",
                    "entry": [{"resource": {"resourceType": "OperationOutcome"}}],
                }
            ),
            FAST,
            "OperationOutcome",
            id="outcome without issues",
        ),
        pytest.param(Reply(body=BIG), SMALL_CAP, "response too large", id="too large, declared"),
        pytest.param(
            Reply(body=BIG, content_length=False),
            SMALL_CAP,
            "response too large",
            id="too large, streamed",
        ),
        pytest.param(
            Reply(status=302, headers={"Location": "/fhir/Condition"}),
            FAST,
            "redirect",
            id="redirect",
        ),
        pytest.param(
            Reply(status=307, headers={"Location": "http://169.254.169.254/"}),
            FAST,
            "redirect",
            id="redirect off server",
        ),
        pytest.param(
            Reply(body=searchset([PF_OBS]), delay_s=1.0),
            replace(FAST, budget_s=0.3),
            "timeout",
            id="slower than budget",
        ),
        pytest.param(
            Reply(body=searchset([PF_OBS]), drip_s=0.1),
            replace(FAST, budget_s=0.3),
            "timeout",
            id="body drips past budget",
        ),
        pytest.param(
            Reply(body=searchset([PF_OBS])), replace(FAST, budget_s=0.0), "timeout", id="no budget"
        ),
    ],
)
def test_server_failure_makes_key_missing(stub, fhir, reply, settings, reason) -> None:
    stub.add("Observation", reply)
    stub.add("Condition", searchset([res("Condition", "c")]))
    started = time.monotonic()
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request({}, server=stub.base_url), OBS_KEY, settings, fhir)
    elapsed = time.monotonic() - started
    assert caught.value.missing == {"observations": reason}
    assert elapsed < settings.budget_s + 0.5  # never waits for a slow server past the budget
    assert all(r.path == "Observation" for r in stub.requests)  # redirects not followed


@pytest.mark.parametrize(
    ("reply", "expected_ids"),
    [
        pytest.param(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {"resource": operation_outcome("warning"), "search": {"mode": "outcome"}},
                    {"resource": PF_OBS},
                ],
            },
            ["pf-obs"],
            id="warning outcome dropped",
        ),
        pytest.param(
            {"resourceType": "Bundle", "entry": [{"resource": operation_outcome("information")}]},
            [],
            id="information-only outcome is no data",
        ),
        pytest.param(Reply(body=json.dumps(searchset([PF_OBS]))), ["pf-obs"], id="plain"),
        pytest.param(Reply(body=searchset([PF_OBS]), drip_s=0.01), ["pf-obs"], id="dripped"),
        pytest.param(
            Reply(body=searchset([PF_OBS]), content_length=False),
            ["pf-obs"],
            id="no Content-Length",
        ),
    ],
)
def test_server_bundle_shapes(stub, fhir, reply, expected_ids) -> None:
    stub.add("Observation", reply)
    result = gather(make_request({}, server=stub.base_url), OBS_KEY, FAST, fhir)
    assert ids(result.resources["observations"]) == expected_ids


def test_response_exactly_at_cap_is_read(stub, fhir) -> None:
    body = json.dumps(searchset([PF_OBS]))
    stub.add("Observation", Reply(body=body))
    settings = replace(FAST, max_response_bytes=len(body.encode()))
    result = gather(make_request({}, server=stub.base_url), OBS_KEY, settings, fhir)
    assert ids(result.resources["observations"]) == ["pf-obs"]


def test_all_missing_keys_are_collected(stub, fhir) -> None:
    stub.add("Patient/" + PATIENT_ID, res("Patient", PATIENT_ID))
    stub.add("Observation", Reply(status=500))
    stub.add("MedicationRequest", Reply(status=404))
    stub.add("MedicationStatement", Reply(body="<html>"))
    stub.add("Condition", searchset([]))
    keys = (*KEYS, PrefetchKey("encounter", "Encounter/{{context.encounterId}}"))
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request({}, server=stub.base_url), keys, FAST, fhir)
    assert caught.value.missing == {
        "observations": "HTTP 500",
        "medicationRequests": "not found",
        "medicationStatements": "invalid JSON",
        "encounter": "unusable token in template",
    }
    assert "Encounter" not in {r.path for r in stub.requests}
    message = str(caught.value)
    assert "observations (HTTP 500)" in message and PATIENT_ID not in message


@pytest.mark.parametrize(
    ("keys", "token", "reason", "sent"),
    [
        pytest.param(OBS_KEY, "abc\r\nX-Injected: 1", "request failed", 0, id="CRLF in token"),
        pytest.param(
            (PrefetchKey("x", "Encounter/{{context.patientId}}"),),
            TOKEN,
            "not found",
            1,
            id="route the server does not have",
        ),
    ],
)
def test_request_level_failures(stub, fhir, keys, token, reason, sent) -> None:
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request({}, server=stub.base_url, token=token), keys, FAST, fhir)
    assert caught.value.missing == {keys[0].key: reason}
    assert len(stub.requests) == sent


@pytest.mark.parametrize(
    "server", ["ftp://127.0.0.1/fhir", "file:///etc/fhir", "fhir.example.org/fhir", "http://"]
)
def test_unusable_fhir_server_is_refused(fhir, server) -> None:
    with pytest.raises(ServerRefused) as caught:
        gather(make_request({}, server=server), OBS_KEY, FAST, fhir)
    assert caught.value.reason == "URL not allowed"


def test_fhir_server_on_a_closed_port(fhir) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request({}, server=server), OBS_KEY, FAST, fhir)
    assert caught.value.missing == {"observations": "connection failed"}


# --- pagination -------------------------------------------------------------------------------

PAGES = [
    [res("Condition", "c1")],
    [res("Condition", "c2"), res("Condition", "c3")],
    [res("Condition", "c4")],
]
COND_KEY = (KEYS[4],)


@pytest.mark.parametrize(
    ("prefetched", "max_pages", "expected"),
    [
        pytest.param(False, 10, ["c1", "c2", "c3", "c4"], id="fetched, all pages"),
        pytest.param(False, 3, ["c1", "c2", "c3", "c4"], id="fetched, pages == cap"),
        pytest.param(False, 2, "too many pages", id="fetched, over cap"),
        pytest.param(True, 3, ["c1", "c2", "c3", "c4"], id="prefetched page 1 counts"),
        pytest.param(True, 2, "too many pages", id="prefetched, over cap"),
        pytest.param(True, 1, "too many pages", id="prefetched, no room"),
    ],
)
def test_pagination(stub, fhir, prefetched, max_pages, expected) -> None:
    stub.add_pages("Condition", PAGES)
    prefetch: dict = {}
    if prefetched:
        prefetch["conditions"] = searchset(PAGES[0], next_url=f"{stub.base_url}/Condition?_page=2")
    request = make_request(prefetch, server=stub.base_url)
    settings = replace(FAST, max_pages=max_pages)
    if isinstance(expected, str):
        with pytest.raises(DataUnavailable) as caught:
            gather(request, COND_KEY, settings, fhir)
        assert caught.value.missing == {"conditions": expected}
        assert len(stub.requests) == max_pages - (1 if prefetched else 0)
        return
    result = gather(request, COND_KEY, settings, fhir)
    assert ids(result.resources["conditions"]) == expected
    assert result.fetched == ("conditions",)
    assert len(stub.requests) == (2 if prefetched else 3)
    assert {r.authorization for r in stub.requests} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/fhir/Condition?_page=2",
        "{base}-evil/Condition?_page=2",  # prefix attack: same host, other base path
        "http://localhost:{port}/fhir/Condition?_page=2",  # only the exact fhirServer spelling
        "/fhir/Condition?_page=2",  # relative
        "ftp://127.0.0.1/fhir/Condition",
    ],
)
@pytest.mark.parametrize("prefetched", [False, True])
def test_next_link_off_server_refused(stub, fhir, next_url, prefetched) -> None:
    port = stub.base_url.rsplit(":", 1)[1].split("/")[0]
    page = searchset(PAGES[0], next_url=next_url.format(base=stub.base_url, port=port))
    stub.add("Condition", page)
    prefetch = {"conditions": page} if prefetched else {}
    with pytest.raises(DataUnavailable) as caught:
        gather(make_request(prefetch, server=stub.base_url), COND_KEY, FAST, fhir)
    assert caught.value.missing == {"conditions": "next link off server"}
    assert len(stub.requests) == (0 if prefetched else 1)


def test_fhir_server_with_trailing_slash(stub, fhir) -> None:
    stub.add_pages("Condition", PAGES[:2])
    result = gather(make_request({}, server=stub.base_url + "/"), COND_KEY, FAST, fhir)
    assert ids(result.resources["conditions"]) == ["c1", "c2", "c3"]


# --- the CDS Hooks specification's own examples ------------------------------------------------


def test_spec_pagination_example_follows_next_link(stub, fhir) -> None:
    text = (EXAMPLES / "spec-order-sign-request-prefetch-pagination.json").read_text("utf-8")
    request = json.loads(text.replace("https://ehr.example.org/fhir", stub.base_url))
    page_two = res("MedicationRequest", "rx\u2011page\u20112\u201101")
    stub.add("MedicationRequest", searchset([page_two]), query={"_page": "2"})
    keys = (PrefetchKey("orders", "MedicationRequest?patient={{context.patientId}}"),)
    result = gather(request, keys, FAST, fhir)
    assert ids(result.resources["orders"]) == ["rx\u2011page\u20111\u201101", page_two["id"]]
    assert result.fetched == ("orders",)
    (recorded,) = stub.requests
    assert recorded.query == {"patient": ["1288992"], "_count": ["1"], "_page": ["2"]}
    assert recorded.authorization is None  # the example has no fhirAuthorization


def test_spec_prefetch_data_example_with_placeholders(fhir) -> None:
    request = json.loads((EXAMPLES / "spec-prefetch-data-example.json").read_text("utf-8"))
    keys = tuple(
        PrefetchKey(k, "Patient/{{context.patientId}}")
        for k in ("patient", "hemoglobin-a1c", "user")
    )
    result = gather(request, keys, FAST, fhir)
    assert [r["resourceType"] for r in result.resources["patient"]] == ["Patient"]
    assert result.resources["hemoglobin-a1c"][0]["code"]["coding"][0]["code"] == "4548-4"
    assert ids(result.resources["user"]) == ["123"]
    assert (result.fetched, result.skipped) == ((), 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("spec-patient-view-request.json", {"patientToGreet": 1}),
        ("hapi-CdsServiceRequestJson.json", {"patientKey": 1, "daughterKey": 1, "parentKey": 0}),
    ],
)
def test_spec_examples_with_full_prefetch(fhir, name, expected) -> None:
    request = json.loads((EXAMPLES / name).read_text("utf-8"))
    keys = tuple(PrefetchKey(k, "Patient/{{context.patientId}}") for k in expected)
    result = gather(request, keys, FAST, fhir)
    assert {k: len(v) for k, v in result.resources.items()} == expected
    assert result.fetched == ()


# --- privacy of logs ----------------------------------------------------------------------------


def test_logs_hold_no_ids_tokens_or_urls(stub, fhir, caplog) -> None:
    serve_all(stub)
    stub.add("Observation", Reply(status=500))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DataUnavailable):
        gather(make_request({}, server=stub.base_url), KEYS, FAST, fhir)
    gather(make_request({"observations": None}, server=stub.base_url), KEYS, FAST, fhir)
    assert "gather:" in caplog.text
    for secret in (PATIENT_ID, TOKEN, "127.0.0.1", "srv-obs"):
        assert secret not in caplog.text


# --- client helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example.org/fhir/Patient/1", True),
        ("http://127.0.0.1:8080/fhir", True),
        ("ftp://ehr.example.org/fhir", False),
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("https:///fhir", False),
        ("//ehr.example.org/fhir", False),
        ("http://[::1", False),  # unparsable
    ],
)
def test_check_url(url: str, allowed: bool, monkeypatch) -> None:
    # Never resolve a real name from tests: ehr.example.org "resolves" to a public address.
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: [ipaddress.ip_address("8.8.8.8")])
    if allowed:
        check_url(url)
    else:
        with pytest.raises(FetchError, match="URL not allowed"):
            check_url(url)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "resourceType": "Bundle",
                "link": [{"relation": "self", "url": "a"}, {"relation": "next", "url": " b "}],
            },
            "b",
        ),
        ({"resourceType": "Bundle", "link": [{"relation": "next", "url": 3}]}, None),
        ({"resourceType": "Bundle", "link": [{"relation": "next", "url": ""}]}, None),
        ({"resourceType": "Bundle", "link": ["next"]}, None),
        ({"resourceType": "Bundle", "link": {"relation": "next", "url": "b"}}, None),
        ({"resourceType": "Patient", "link": [{"relation": "next", "url": "b"}]}, None),
        ([], None),
    ],
)
def test_next_link(body: Any, expected: str | None) -> None:
    assert next_link(body) == expected
