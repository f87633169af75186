"""The HTTP edge: discovery, routing, errors, CORS, request ids, health, feedback."""

from __future__ import annotations

import json
import logging

import pytest

from cds_service import engine
from cds_service.registry import SERVICES
from cds_service.validation import validator

from .builders import HOOKS, PREFETCH_KEYS, hook_request, null_prefetch

SERVICE = "vitamin-d-patient-view"
URL = f"/cds-services/{SERVICE}"


def post(client, url, body, content_type="application/json", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type=content_type, **kw)


def assert_json_error(reply, status):
    assert reply.status_code == status, reply.get_data(as_text=True)
    body = reply.get_json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    assert "details" not in body or (isinstance(body["details"], list) and body["details"])
    assert "Traceback" not in reply.get_data(as_text=True)
    return body


# --- discovery -------------------------------------------------------------------------


def test_discovery_lists_exactly_the_contract_services(client):
    reply = client.get("/cds-services")
    assert reply.status_code == 200
    services = reply.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == HOOKS
    for s in services:
        assert s["title"] and s["description"]
        assert set(s["prefetch"]) == set(PREFETCH_KEYS)


def test_discovery_prefetch_templates_cover_what_the_service_reads(client):
    prefetch = client.get("/cds-services").get_json()["services"][0]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    obs = prefetch["observations"]
    for loinc in ("62292-8", "1989-3", "49054-0", "14635-7", "35365-6", "17861-6", "2000-8"):
        assert f"http://loinc.org|{loinc}" in obs
    for excluded in ("2236-8", "1990-1"):
        assert excluded not in obs
    assert prefetch["medicationRequests"].endswith("&status=active")
    assert prefetch["medicationStatements"].startswith(
        "MedicationStatement?patient={{context.patientId}}"
    )
    assert prefetch["medicationStatements"].endswith("&status=active")
    assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
    # _include is outside the CDS Hooks prefetch query subset: only our own queries add it.
    assert not any("_include" in t for t in prefetch.values())


@pytest.mark.parametrize("service_id", sorted(SERVICES))
def test_every_registered_service_is_routed(client, service_id):
    reply = post(
        client, f"/cds-services/{service_id}", hook_request(service_id, prefetch=null_prefetch())
    )
    assert reply.status_code == 200
    assert reply.get_json() == {"cards": []}


def test_empty_answer_is_exactly_cards_empty(client):
    reply = post(client, URL, hook_request(prefetch=null_prefetch()))
    assert reply.get_data(as_text=True).strip() == '{"cards":[]}'


# --- errors ---------------------------------------------------------------------------


def _without(body, *path):
    *parents, last = path
    target = body
    for p in parents:
        target = target[p]
    del target[last]
    return body


def _with(body, value, *path):
    *parents, last = path
    target = body
    for p in parents:
        target = target[p]
    target[last] = value
    return body


def base(service=SERVICE):
    return hook_request(service, prefetch=null_prefetch())


PV, SELECT, SIGN = "vitamin-d-patient-view", "vitamin-d-order-select", "vitamin-d-order-sign"
TOKEN = {"access_token": "t", "token_type": "Bearer", "expires_in": 1, "scope": "s", "subject": "c"}
INVALID_REQUESTS = [
    ("missing hook", PV, lambda: _without(base(), "hook")),
    ("missing hookInstance", PV, lambda: _without(base(), "hookInstance")),
    ("missing context", PV, lambda: _without(base(), "context")),
    ("context not an object", PV, lambda: _with(base(), [], "context")),
    ("missing patientId", PV, lambda: _without(base(), "context", "patientId")),
    ("missing userId", PV, lambda: _without(base(), "context", "userId")),
    ("prefixed patientId", PV, lambda: _with(base(), "Patient/123", "context", "patientId")),
    ("patientId with a query", PV, lambda: _with(base(), "1&code=x", "context", "patientId")),
    ("userId without type", PV, lambda: _with(base(), "doc-1", "context", "userId")),
    ("prefetch value a string", PV, lambda: _with(base(), "Patient/1", "prefetch", "patient")),
    ("prefetch an array", PV, lambda: _with(base(), [], "prefetch")),
    ("fhirAuthorization without fhirServer", PV, lambda: _with(base(), TOKEN, "fhirAuthorization")),
    (
        "fhirAuthorization without token",
        PV,
        lambda: _with(
            _with(base(), "https://fhir.example.org", "fhirServer"),
            {k: v for k, v in TOKEN.items() if k != "access_token"},
            "fhirAuthorization",
        ),
    ),
    ("fhirServer not a URL", PV, lambda: _with(base(), "file:///etc/passwd", "fhirServer")),
    ("hook of another service", PV, lambda: _with(base(), "order-sign", "hook")),
    (
        "order-select without selections",
        SELECT,
        lambda: _without(base(SELECT), "context", "selections"),
    ),
    (
        "order-sign without draftOrders",
        SIGN,
        lambda: _without(base(SIGN), "context", "draftOrders"),
    ),
    (
        "draftOrders not a Bundle",
        SIGN,
        lambda: _with(base(SIGN), {"resourceType": "List"}, "context", "draftOrders"),
    ),
    (
        "patient-view user on order-sign",
        SIGN,
        lambda: _with(base(SIGN), "Patient/pat-1", "context", "userId"),
    ),
]


@pytest.mark.parametrize(
    "name,service,build", INVALID_REQUESTS, ids=[n for n, _, _ in INVALID_REQUESTS]
)
def test_invalid_request_is_400_with_details(client, name, service, build):
    error = assert_json_error(post(client, f"/cds-services/{service}", build()), 400)
    assert error["details"]


@pytest.mark.parametrize(
    "raw,detail",
    [
        (b"{not json", "line 1"),
        (b'{"hook": NaN}', "NaN"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"", "line 1"),
        (b"[1, 2]", "(root)"),
    ],
)
def test_malformed_body_is_400(client, raw, detail):
    error = assert_json_error(post(client, URL, raw), 400)
    assert any(detail in d for d in error["details"])


def test_deeply_nested_json_is_400_not_500(client):
    raw = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert_json_error(post(client, URL, raw), 400)


def test_unknown_service_is_404(client):
    assert_json_error(post(client, "/cds-services/no-such-service", base()), 404)
    assert_json_error(post(client, "/cds-services/no-such-service/feedback", {"feedback": []}), 404)
    assert_json_error(client.get("/no/such/path"), 404)


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_wrong_method_is_405_with_allow(client, method):
    reply = getattr(client, method)(URL)
    assert_json_error(reply, 405)
    assert "POST" in reply.headers["Allow"]


def test_post_to_discovery_is_405(client):
    assert_json_error(post(client, "/cds-services", base()), 405)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_is_415(client, content_type):
    assert_json_error(post(client, URL, json.dumps(base()), content_type=content_type), 415)


def test_fhir_json_media_type_is_accepted(client):
    assert post(client, URL, base(), content_type="application/fhir+json").status_code == 200


def test_body_over_limit_is_413(make_app, settings):
    client = make_app(settings.with_overrides(max_body_bytes=4096)).test_client()
    body = base()
    body["context"]["padding"] = "x" * 5000
    error = assert_json_error(post(client, URL, body), 413)
    assert "4096" in error["details"][0]
    body["context"]["padding"] = "x" * 100
    assert post(client, URL, body).status_code == 200


def test_default_body_limit_is_5_mib(settings):
    assert settings.max_body_bytes == 5 * 1024 * 1024


def test_absent_prefetch_without_fhir_server_is_412_naming_keys(client):
    body = hook_request(prefetch={"patient": None, "observations": None})
    error = assert_json_error(post(client, URL, body), 412)
    named = {d.split(":")[0] for d in error["details"]}
    assert named == {"medicationRequests", "medicationStatements", "conditions"}


def test_unexpected_exception_is_json_500_without_trace_or_data(client, monkeypatch, caplog):
    def boom(*args, **kwargs):
        # Built at run time so the traceback's source line does not hold the text itself.
        raise ValueError(" ".join(["Jane", "Doe", "12", "ng/mL"]))

    monkeypatch.setattr(engine, "respond", boom)
    with caplog.at_level(logging.INFO):
        reply = post(client, URL, base())
    body = assert_json_error(reply, 500)
    assert "Jane Doe" not in reply.get_data(as_text=True)
    assert "Jane Doe" not in caplog.text
    assert "ValueError" in caplog.text
    assert reply.headers["X-Request-ID"] in body["details"][0]


# --- auth -----------------------------------------------------------------------------


def test_calls_are_refused_when_auth_is_on_and_not_configured(make_app, settings):
    client = make_app(settings.with_overrides(auth_disabled=False)).test_client()
    assert client.get("/cds-services").status_code == 200  # discovery stays public
    reply = post(client, URL, base(), headers={"Authorization": "Bearer x.y.z"})
    assert_json_error(reply, 401)
    assert reply.get_json() == {"error": "unauthorized"}
    fb = {
        "feedback": [
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}
        ]
    }
    assert_json_error(post(client, f"{URL}/feedback", fb), 401)


# --- CORS, request id, health -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/cds-services", URL, f"{URL}/feedback"])
def test_cors_preflight_allows_authorization_and_content_type(client, path):
    reply = client.options(
        path,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert reply.status_code in (200, 204)
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]


def test_cors_on_actual_responses_including_errors(client):
    headers = {"Origin": "https://sandbox.cds-hooks.org"}
    assert (
        client.get("/cds-services", headers=headers).headers["Access-Control-Allow-Origin"] == "*"
    )
    reply = post(client, URL, b"{", headers=headers)
    assert reply.status_code == 400 and reply.headers["Access-Control-Allow-Origin"] == "*"


def test_configured_cors_origin(make_app, settings):
    client = make_app(settings.with_overrides(cors_origin="https://ehr.example.org")).test_client()
    reply = client.get("/cds-services")
    assert reply.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert reply.headers["Vary"] == "Origin"


@pytest.mark.parametrize("origin", ["*", "https://ehr.example.org"])
def test_cors_headers_are_each_sent_once_with_their_values(make_app, settings, origin):
    client = make_app(settings.with_overrides(cors_origin=origin)).test_client()
    for reply in (client.get("/cds-services"), post(client, URL, b"{"),
                  client.options(URL, headers={"Access-Control-Request-Method": "POST"})):  # fmt: skip
        sent = [(k, v) for k, v in reply.headers.items() if k.startswith(("Access-", "Vary"))]
        assert sent == [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
            ("Access-Control-Expose-Headers", "X-Request-ID"),
            ("Access-Control-Max-Age", "86400"),
            *([("Vary", "Origin")] if origin != "*" else []),
        ]
    assert "Access-Control-Allow-Origin" not in client.get("/healthz").headers


def test_request_id_is_echoed_or_generated(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers[
        "X-Request-ID"
    ]
    assert len(generated) == 32 and generated.isalnum()
    assert (
        client.get("/healthz").headers["X-Request-ID"]
        != client.get("/healthz").headers["X-Request-ID"]
    )


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_readiness_fails_when_store_is_unreachable(make_app, settings):
    unreachable = settings.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/test?connect_timeout=1",
        migrate_on_start=False,
    )
    reply = make_app(unreachable).test_client().get("/readyz")
    assert_json_error(reply, 503)
    assert make_app(unreachable).test_client().get("/healthz").status_code == 200


def test_request_log_has_no_patient_data(client, caplog):
    body = hook_request(prefetch=null_prefetch(), pid="secret-patient-77")
    with caplog.at_level(logging.INFO):
        assert post(client, URL, body).status_code == 200
    records = [r for r in caplog.records if r.getMessage() == "request"]
    assert records and records[-1].status == 200 and records[-1].service == SERVICE
    assert records[-1].route == "/cds-services/<service_id>"
    assert "secret-patient-77" not in caplog.text


# --- issued cards are recorded --------------------------------------------------------------


def test_issued_cards_are_recorded_without_patient_data(client, app, monkeypatch):
    card = {
        "uuid": "0b6f0a5e-3c1e-4f3e-9a4c-1f2d3e4a5b6c",
        "summary": "Vitamin D deficiency (12 ng/mL)",
        "detail": "Latest 25(OH)D 12 ng/mL.",
        "indicator": "warning",
        "source": {
            "label": "Endocrine Society 2011",
            "url": "https://doi.org/10.1210/jc.2011-0385",
            "topic": {
                "system": "urn:vitd-cds:topic",
                "code": "vitd-deficiency",
                "display": "Deficiency",
            },
        },
        "overrideReasons": [{"system": "urn:vitd-cds:override", "code": "x", "display": "Not now"}],
    }
    monkeypatch.setattr(engine, "cards_for", lambda facts, guideline, patient_id: [card])
    assert post(client, URL, base()).get_json() == {"cards": [card]}
    fb = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
                "overrideReason": {"reason": {"system": "urn:vitd-cds:override", "code": "x"}},
            }
        ]
    }
    assert post(client, f"{URL}/feedback", fb).status_code == 200
    rows = app.extensions["vitd.runtime"].store.feedback_for_card(card["uuid"])
    assert [r["topic"] for r in rows] == ["vitd-deficiency"]


def test_response_schema_rejects_what_the_contract_forbids():
    bad_cards = [
        {"cards": None},
        {
            "cards": [
                {
                    "uuid": "x",
                    "summary": "s" * 141,
                    "indicator": "info",
                    "detail": "d",
                    "source": {
                        "label": "l",
                        "url": "https://x",
                        "topic": {"system": "urn:vitd-cds:topic", "code": "c", "display": "d"},
                    },
                }
            ]
        },
        {"cards": [], "systemActions": []},
    ]
    for body in bad_cards:
        assert list(validator("response").iter_errors(body))


# --- feedback ------------------------------------------------------------------------------


def accepted(card="card-1", suggestion="sugg-1", ts="2026-11-25T10:00:00Z"):
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": ts,
    }


def test_feedback_is_stored_once(client, app):
    reply = post(client, f"{URL}/feedback", {"feedback": [accepted(), accepted()]})
    assert reply.status_code == 200 and reply.get_json() == {"received": 2, "stored": 1}
    assert post(client, f"{URL}/feedback", {"feedback": [accepted()]}).get_json()["stored"] == 0
    assert len(app.extensions["vitd.runtime"].store.feedback_for_card("card-1")) == 1


def test_spec_feedback_example_is_accepted(client, shared_data, app):
    body = json.loads(
        (shared_data / "cds-hooks-examples/spec-feedback-overridden-with-reason.json").read_text()
    )
    assert post(client, f"{URL}/feedback", body).get_json() == {"received": 1, "stored": 1}
    rows = app.extensions["vitd.runtime"].store.feedback_for_card(body["feedback"][0]["card"])
    assert rows[0]["outcome"] == "overridden" and rows[0]["topic"] is None


BAD_FEEDBACK = [
    ("not a batch", {"card": "c"}),
    ("empty batch", {"feedback": []}),
    (
        "accepted without suggestions",
        {
            "feedback": [
                {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T10:00:00Z"}
            ]
        },
    ),
    (
        "unknown outcome",
        {
            "feedback": [
                {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-25T10:00:00Z"}
            ]
        },
    ),
    ("bad timestamp", {"feedback": [accepted(ts="yesterday")]}),
    (
        "missing card",
        {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:00Z"}]},
    ),
    (
        "one good one bad",
        {
            "feedback": [
                accepted(card="good-card"),
                {"card": "c2", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T10:00:00Z"},
            ]
        },
    ),
]


@pytest.mark.parametrize("name,body", BAD_FEEDBACK, ids=[n for n, _ in BAD_FEEDBACK])
def test_bad_feedback_is_400_and_stores_nothing(client, app, name, body):
    assert_json_error(post(client, f"{URL}/feedback", body), 400)
    store = app.extensions["vitd.runtime"].store
    assert store.feedback_for_card("good-card") == [] and store.feedback_for_card("c") == []


def test_feedback_needs_json(client):
    assert_json_error(post(client, f"{URL}/feedback", "x", content_type="text/plain"), 415)
