"""Structured JSON logs: what each request logs, and what no log line ever holds (issue 6).

A full scenario (JWT on, data fetched from a loopback FHIR server with a bearer token, cards,
feedback, refusals of every kind) runs with the service's own JSON formatter on the root logger
at DEBUG; the captured text must not hold the patient's id, name, birth date or lab value, the
FHIR access token, or any JWT.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from cds_service import engine
from cds_service.logs import JsonFormatter

from .builders import hook_request, searchset
from .fhir_stub import FhirStub, Reply
from .jwt_helpers import PUBLIC_BASE, signer

PID = "zq-8841-pid"
FAMILY, GIVEN = "Quixotelle", "Zebulonia"
BIRTH = "1937-02-19"
LEVEL = 17.4321
FHIR_TOKEN = "fhir-access-token-7f3a9c"
SERVICE = "vitamin-d-patient-view"
PATH = f"/cds-services/{SERVICE}"


@pytest.fixture
def captured():
    """The root logger at DEBUG through the service's JSON formatter, as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def _patient() -> dict:
    return {
        "resourceType": "Patient",
        "id": PID,
        "name": [{"family": FAMILY, "given": [GIVEN]}],
        "birthDate": BIRTH,
        "gender": "female",
    }


def _level() -> dict:
    return {
        "resourceType": "Observation",
        "id": f"obs-{PID}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
        "subject": {"reference": f"Patient/{PID}", "display": f"{GIVEN} {FAMILY}"},
        "effectiveDateTime": "2026-10-01",
        "valueQuantity": {"value": LEVEL, "unit": "ng/mL"},
    }


CARD = {
    "uuid": "8f9e4a52-3c1d-4b7a-9e2f-0a1b2c3d4e5f",
    "summary": "Vitamin D deficiency",
    "detail": "test card",
    "indicator": "info",
    "source": {
        "label": "test",
        "url": "https://example.org/guideline",
        "topic": {"system": "urn:vitd-cds:topic", "code": "vitd-deficiency", "display": "x"},
    },
}


def _post(client, path, body, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def _records(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_full_scenario_logs_no_patient_data_or_tokens(auth_app, captured):
    """With the real rules: the level is low, so a card names it (and the logs must not)."""
    client = auth_app.test_client()
    tokens: list[str] = []

    def jwt_for(path: str = PATH, **claims) -> str:
        token = signer().sign(aud=PUBLIC_BASE + path, **claims)
        tokens.append(token)
        return token

    with FhirStub() as stub:
        stub.add(f"Patient/{PID}", _patient())
        stub.add("Observation", searchset(_level()))
        stub.add("MedicationRequest", searchset())
        stub.add("MedicationStatement", searchset())
        stub.add("Condition", Reply(status=500))
        body = hook_request(prefetch={}, fhir_server=stub.base_url, token=FHIR_TOKEN, pid=PID)

        # 412: the FHIR server fails one key (after reading the patient and the level)
        assert _post(client, PATH, body, jwt_for()).status_code == 412
        stub.add("Condition", searchset())
        ok = jwt_for()
        served = _post(client, PATH, body, ok)
        assert served.status_code == 200
        topics = [c["source"]["topic"]["code"] for c in served.get_json()["cards"]]
        assert "vitd-deficiency" in topics
        assert "17.43 ng/mL" in json.dumps(served.get_json())  # the card names the value
        assert _post(client, PATH, body, ok).status_code == 401  # replayed
        assert _post(client, PATH, body, jwt_for(aud_extra=1, iss="https://x")).status_code == 401
        assert {r.authorization for r in stub.requests} == {f"Bearer {FHIR_TOKEN}"}

    refused = dict(body, fhirServer=f"https://169.254.169.254/{PID}")
    assert _post(client, PATH, refused, jwt_for()).status_code == 400
    invalid = dict(body, context={"patientId": f"{PID}/{FAMILY}", "userId": "x"})
    assert _post(client, PATH, invalid, jwt_for()).status_code == 400
    feedback = {
        "feedback": [
            {
                "card": CARD["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
                "overrideReason": {"userComment": f"{GIVEN} {FAMILY} declined"},
            }
        ]
    }
    fb_path = f"{PATH}/feedback"
    assert _post(client, fb_path, feedback, jwt_for(fb_path)).status_code == 200
    assert _post(client, PATH, body, "not-a-jwt").status_code == 401

    text = captured.getvalue()
    assert text.count('"message": "request"') == 8  # the scenario did log
    for secret in (PID, FAMILY, GIVEN, BIRTH, str(LEVEL), FHIR_TOKEN, "not-a-jwt", *tokens):
        assert secret not in text, secret
    # the value as the card renders it; timestamps ("10:57:17.431") are left out of this check
    without_times = json.dumps([{k: v for k, v in r.items() if k != "time"} for r in _records(captured)])
    assert "17.43" not in without_times
    for token in tokens:  # not even a JWT's signature or payload part
        for part in token.split("."):
            assert part not in text


def test_request_log_fields(auth_app, captured, monkeypatch):
    monkeypatch.setattr(
        engine, "cards_for", lambda *args, **kwargs: [dict(CARD, uuid=str(uuid.uuid4())) for _ in range(2)]
    )
    client = auth_app.test_client()
    body = hook_request(prefetch=dict.fromkeys(("patient", "observations", "medicationRequests", "medicationStatements", "conditions")))
    reply = client.post(
        PATH,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {signer().sign()}", "X-Request-ID": "req-42"},
    )
    assert reply.status_code == 200
    refused = client.post(PATH, data=json.dumps(body), content_type="application/json")
    assert refused.status_code == 401
    requests_logged = [r for r in _records(captured) if r["message"] == "request"]
    served, denied = requests_logged
    assert served["request_id"] == "req-42"
    assert served["service"] == SERVICE and served["status"] == 200
    assert served["route"] == "/cds-services/<service_id>" and served["method"] == "POST"
    assert isinstance(served["latency_ms"], float) and served["latency_ms"] >= 0
    assert served["cards"] == 2 and served["cards_by_topic"] == {"vitd-deficiency": 2}
    assert denied["status"] == 401 and denied["auth_rejection"] == "missing_token"
    assert len(denied["request_id"]) == 32  # generated
    assert "cards_by_topic" not in denied
