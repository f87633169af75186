"""`cds-service fixtures serve` as the CDS Hooks sandbox meets it: a browser app on another
origin (CORS), "Change Patient" (`POST /Patient/_search`, then `GET /Patient`), and a banner
with the patient's name."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle

from cds_service import fixtures
from cds_service.fhir_server import create_fhir_app
from tests.server_process import free_port

SANDBOX = "http://localhost:8080"  # the sandbox's own origin when built and served locally


@pytest.fixture(scope="module")
def served():
    """The real command, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "fixtures", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{base}/metadata", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("fixture FHIR server did not start")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_cors_preflight_allows_another_origin(served):
    reply = requests.options(
        f"{served}/Patient/_search",
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,accept",
        },
        timeout=5,
    )
    assert reply.status_code in (200, 204)
    assert reply.headers["Access-Control-Allow-Origin"] in ("*", SANDBOX)
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert "content-type" in reply.headers["Access-Control-Allow-Headers"].lower()


def test_reads_carry_cors_headers(served):
    reply = requests.get(
        f"{served}/Patient/adult-deficient", headers={"Origin": SANDBOX}, timeout=5
    )
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] in ("*", SANDBOX)
    missing = requests.get(f"{served}/Patient/nobody", headers={"Origin": SANDBOX}, timeout=5)
    assert missing.status_code == 404 and "Access-Control-Allow-Origin" in missing.headers


def test_get_patient_lists_every_fixture_patient(served):
    reply = requests.get(f"{served}/Patient", headers={"Origin": SANDBOX}, timeout=5)
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"]
    bundle = reply.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == len(fixtures.names())
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert ids == {fixtures.load(n).patient_id for n in fixtures.names()}


def test_post_search_is_the_same_search(served):
    """fhirclient (the sandbox) tries `POST /{type}/_search` with a form body first."""
    reply = requests.post(
        f"{served}/Patient/_search", data={"_count": "5"}, headers={"Origin": SANDBOX}, timeout=5
    )
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"]
    assert len(reply.json()["entry"]) == 5 and reply.json()["total"] == len(fixtures.names())
    conditions = requests.post(
        f"{served}/Condition/_search", data={"patient": "ckd-no-level"}, timeout=5
    ).json()
    assert conditions == requests.get(f"{served}/Condition?patient=ckd-no-level", timeout=5).json()


def test_patient_search_by_id():
    client = create_fhir_app().test_client()
    bundle = client.get("/Patient?_id=teen-no-level,ckd-no-level").get_json()
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["ckd-no-level", "teen-no-level"]


@pytest.mark.parametrize("name", fixtures.names())
def test_every_fixture_patient_has_a_synthetic_name(name):
    """So the sandbox's banner and patient list do not read "Unknown"."""
    first = fixtures.load(name).patient["name"][0]  # what the sandbox reads: given + family
    assert first["given"] and all(isinstance(g, str) and g for g in first["given"])
    assert isinstance(first["family"], str) and first["family"]
