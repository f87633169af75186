"""FHIR isolation (contract §6): one slow or huge FHIR server slows no one else.

A slow FHIR stub beside a healthy one. Calls to the slow one are held by the stub until the
test releases them (or the stub closes), so "answered while the slow call is still in flight"
is a fact, not a timing; no test asserts a latency.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from cds_service import arrival, ssrf
from cds_service.fhir_client import host_key

from .builders import PATIENT_ID, full_record, hook_request
from .fhir_stub import FhirStub, Reply

URL = "/cds-services/vitamin-d-patient-view"
ROUTES = {
    "patient": f"Patient/{PATIENT_ID}",
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}
GUARD_S = 30.0


def serve_record(stub: FhirStub, **reply) -> FhirStub:
    for key, route in ROUTES.items():
        stub.add(route, Reply(full_record()[key], **reply))
    return stub


def call(client, body):
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def in_background(fn):
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    return thread, box


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def slow():
    with FhirStub(delay_s=GUARD_S * 2) as stub:  # answers only when the stub closes
        yield serve_record(stub)


@pytest.fixture
def healthy():
    with FhirStub() as stub:
        yield serve_record(stub)


def test_a_slow_host_holds_its_own_share_and_nobody_elses(make_app, settings, slow, healthy):
    app = make_app(
        settings.with_overrides(
            fhir_budget_s=GUARD_S * 2, fhir_max_calls_per_host=1, fhir_max_gets_per_host=1,
            fhir_max_workers=1,
        )
    )  # fmt: skip
    client = app.test_client()
    fhir = app.extensions["vitd.runtime"].fhir
    first, box = in_background(lambda: call(app.test_client(), hook_request(fhir_server=slow.base_url)))
    host = host_key(slow.base_url)
    wait_until(lambda: fhir._calls.get(host) == 1, "the slow call never started gathering")
    # the same host again: refused at once, not queued behind the first
    busy = call(client, hook_request(fhir_server=slow.base_url))
    assert busy.status_code == 412
    assert all(d.endswith("fhirServer busy") for d in busy.get_json()["details"])
    # another host and prefetch-only calls are answered while the slow call is in flight
    assert call(client, hook_request(fhir_server=healthy.base_url)).status_code == 200
    assert call(client, hook_request(prefetch=full_record())).status_code == 200
    assert first.is_alive() and not box
    slow.close()  # the slow server finally answers (the stub closes its connections)
    first.join(GUARD_S)
    assert box and box[0].status_code == 412
    assert fhir._calls == {}  # the slow host's slot is free again


def test_work_queued_past_its_budget_is_refused_and_not_started(client, healthy, settings):
    arrival._local.arrived = time.monotonic() - settings.fhir_budget_s - 1  # waited for a thread
    try:
        reply = call(client, hook_request(fhir_server=healthy.base_url))
    finally:
        arrival._local.arrived = None
    assert reply.status_code == 503 and "Retry-After" in reply.headers
    assert healthy.requests == []


def test_the_budget_counts_from_arrival(make_app, settings, healthy):
    """A call that arrived most of its budget ago gets only the rest for its FHIR queries."""
    from cds_service.gather import DataUnavailable, GatherSettings, gather
    from cds_service.registry import SERVICES

    app = make_app(settings)
    fhir = app.extensions["vitd.runtime"].fhir
    with pytest.raises(DataUnavailable) as unavailable:
        gather(
            hook_request(fhir_server=healthy.base_url),
            SERVICES["vitamin-d-patient-view"].prefetch,
            GatherSettings(budget_s=1.0),
            fhir,
            arrived=time.monotonic() - 1.0,
        )
    assert set(unavailable.value.missing.values()) == {"timeout"}
    assert healthy.requests == []


def test_dns_checks_have_their_own_time_limit(make_app, settings, monkeypatch):
    released = threading.Event()

    def hanging_resolver(host, port):
        released.wait(GUARD_S * 2)
        return []

    monkeypatch.setattr(ssrf, "resolve", hanging_resolver)
    app = make_app(settings.with_overrides(fhir_budget_s=GUARD_S * 2, fhir_dns_timeout_s=0.2))
    client = app.test_client()
    try:
        thread, box = in_background(
            lambda: call(client, hook_request(fhir_server="https://slow-dns.example.org/fhir"))
        )
        thread.join(GUARD_S)
        assert box, "the DNS check was not bounded by its own time limit"
        assert box[0].status_code == 412
        assert box[0].get_json()["details"] == ["fhirServer: name resolution timeout"]
        assert call(client, hook_request(prefetch=full_record())).status_code == 200
    finally:
        released.set()


def test_fhir_bytes_held_per_worker_are_capped(make_app, settings):
    big = {"resourceType": "Bundle", "type": "searchset",
           "entry": [{"resource": {"resourceType": "Observation", "id": f"o{n}", "status": "final",
                                   "code": {"text": "x" * 1000}}} for n in range(100)]}  # fmt: skip
    with FhirStub() as stub:
        serve_record(stub)
        stub.add("Observation", big)
        app = make_app(settings.with_overrides(fhir_max_held_bytes=50_000))
        reply = call(app.test_client(), hook_request(fhir_server=stub.base_url))
        assert reply.status_code == 412
        assert reply.get_json()["details"] == ["observations: responses over memory cap"]
        assert app.extensions["vitd.runtime"].fhir.held_bytes == 0  # released with the call
        roomy = make_app(settings.with_overrides(fhir_max_held_bytes=10_000_000))
        assert call(roomy.test_client(), hook_request(fhir_server=stub.base_url)).status_code == 200


def test_a_read_that_outlives_its_call_holds_no_bytes(make_app, settings):
    """A GET still streaming when its call has ended (given up at the deadline) stops at its
    next chunk and leaves the worker's byte count as it was."""
    from cds_service.fhir_client import FetchError, _Held

    fhir = make_app(settings).extensions["vitd.runtime"].fhir
    held = _Held(fhir)
    held.take(1000)
    assert fhir.held_bytes == 1000
    held.release()
    with pytest.raises(FetchError):
        held.take(1000)
    assert fhir.held_bytes == 0


def test_a_hanging_name_lookup_does_not_hold_up_servers_given_by_address(
    make_app, settings, monkeypatch, healthy
):
    released = threading.Event()
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: released.wait(GUARD_S * 2) and [])
    app = make_app(settings.with_overrides(fhir_dns_timeout_s=0.2))
    client = app.test_client()
    try:
        for _ in range(3):  # more hanging lookups than the DNS pool has threads
            call(client, hook_request(fhir_server="https://hangs.example.org/fhir"))
        assert call(client, hook_request(fhir_server=healthy.base_url)).status_code == 200
    finally:
        released.set()
