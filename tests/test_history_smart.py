"""SMART EHR launch of the history page, end to end over loopback: app ⇄ stub authorization
server ⇄ stub FHIR server, with a `requests` session as the browser. Every refusal is a clear
HTML page with a 4xx (502 when the EHR's own servers fail), never a 500."""

from __future__ import annotations

import base64
import json
import logging
import re
import zlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa

from cds_service.config import Settings
from cds_service.history.sessions import SessionStore
from cds_service.history.web import SCOPES

from . import history_patients as patients
from .fhir_stub import Reply
from .live_server import LiveServer
from .smart_ehr import CLIENT_ID, LAUNCH_ID, StubEhr
from .test_store import store  # noqa: F401 - the SQLite + PostgreSQL store fixture

SECRET = "test-secret-" + "x" * 40


@pytest.fixture
def launch_settings(settings):
    return settings.with_overrides(smart_client_id=CLIENT_ID, secret_key=SECRET)


@pytest.fixture
def live():
    with LiveServer() as server:
        yield server


def mount(live, make_app, settings, ehr, **overrides):
    app = make_app(
        settings.with_overrides(
            public_base_url=live.url, smart_allowed_issuers=(ehr.iss,), **overrides
        )
    )
    live.serve(app)
    return app


def launch(browser: requests.Session, live, ehr, **params) -> requests.Response:
    query = {"iss": ehr.iss, "launch": LAUNCH_ID, **params}
    return browser.get(f"{live.url}/launch", params=query, timeout=10)


def points(page: str) -> list[float]:
    return [float(v) for v in re.findall(r'data-ng-ml="([0-9.]+)"', page)]


def flask_session(browser: requests.Session) -> dict:
    """The decoded payload of the Flask session cookie (signed, not encrypted)."""
    value = browser.cookies.get("vitd_history")
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def test_launch_end_to_end(live, make_app, launch_settings, caplog):
    caplog.set_level(logging.DEBUG)
    with StubEhr(patients.deficient_then_corrected()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        page = launch(browser, live, ehr)

        assert page.status_code == 200, page.text
        assert page.url == f"{live.url}/history"
        assert ehr.problems == []
        assert points(page.text) == [12.0, 24.0, 34.0, pytest.approx(34.46, abs=0.01)]
        assert "Cholecalciferol 50000 UNT Oral Capsule" in page.text
        assert "7,143 IU/day vitamin D" in page.text
        assert page.headers["Cache-Control"] == "no-store"

        # the authorization request: scopes, PKCE, state, aud and launch as SMART says
        (authorize,) = [r for r in ehr.auth.requests if r.path == "authorize"]
        assert authorize.args["scope"] == SCOPES
        assert authorize.args["redirect_uri"] == f"{live.url}/history/callback"
        (token_call,) = [r for r in ehr.auth.requests if r.path == "token"]
        assert token_call.method == "POST" and "code_verifier" in token_call.form
        # the record was read with the token, for the launch's patient only
        (token,) = ehr.tokens
        reads = [r for r in ehr.fhir.requests if not r.path.startswith(".well-known")]
        assert {r.path for r in reads} == {"Observation", "MedicationRequest", "MedicationStatement"}
        assert all(r.authorization == f"Bearer {token}" for r in reads)
        assert all(r.args["patient"] == ehr.patient_id for r in reads)
        # the token never reaches the browser (URLs, cookie) nor the logs
        for hop in [*page.history, page]:
            assert token not in hop.url and token not in hop.headers.get("Location", "")
        assert token not in page.text
        assert set(flask_session(browser)) == {"smart"}
        assert token not in json.dumps(flask_session(browser))
        assert token not in caplog.text and ehr.patient_id not in caplog.text


def test_the_page_reloads_without_a_new_launch(live, make_app, launch_settings):
    with StubEhr(patients.warfarin_with_inr()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        assert launch(browser, live, ehr).status_code == 200
        again = browser.get(f"{live.url}/history", timeout=10)
        assert again.status_code == 200
        assert re.findall(r'data-inr="([0-9.]+)"', again.text) == ["2.40", "2.80", "1.90", "2.30"]


def test_callback_may_land_on_another_worker(live, make_app, launch_settings):
    """Sessions live in the shared store: a second app on the same database finishes it."""
    with StubEhr(patients.no_results()) as ehr, requests.Session() as browser:
        first = mount(live, make_app, launch_settings, ehr)
        response = browser.get(
            f"{live.url}/launch", params={"iss": ehr.iss, "launch": LAUNCH_ID},
            allow_redirects=False, timeout=10,
        )
        assert response.status_code == 302
        second = make_app(first.extensions["vitd.settings"].with_overrides(migrate_on_start=False))
        live.serve(second)
        page = browser.get(response.headers["Location"], timeout=10)
        assert page.status_code == 200 and page.url.endswith("/history")
        assert "No 25(OH)D results on file" in page.text


def test_state_mismatch_is_refused(live, make_app, launch_settings):
    with StubEhr(patients.no_results()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        to_auth = browser.get(
            f"{live.url}/launch", params={"iss": ehr.iss, "launch": LAUNCH_ID},
            allow_redirects=False, timeout=10,
        )
        at_auth = requests.get(to_auth.headers["Location"], allow_redirects=False, timeout=10)
        callback = urlsplit(at_auth.headers["Location"])
        code = parse_qs(callback.query)["code"][0]
        forged = browser.get(
            f"{live.url}{callback.path}", params={"code": code, "state": "forged"}, timeout=10
        )
        assert forged.status_code == 400
        assert "state mismatch" in forged.text and "<h1>" in forged.text
        assert ehr.tokens == []  # the code was not exchanged
        # the genuine answer still completes the launch
        genuine = browser.get(at_auth.headers["Location"], timeout=10)
        assert genuine.status_code == 200 and len(ehr.tokens) == 1


def test_an_issuer_not_allowed_is_refused_without_contacting_it(live, make_app, launch_settings):
    with StubEhr(patients.no_results()) as ehr, StubEhr(patients.no_results()) as other:
        mount(live, make_app, launch_settings, ehr)
        page = requests.get(
            f"{live.url}/launch", params={"iss": other.iss, "launch": LAUNCH_ID}, timeout=10
        )
        assert page.status_code == 403 and "EHR not allowed" in page.text
        assert other.fhir.requests == [] and other.auth.requests == []


def test_denied_consent(live, make_app, launch_settings):
    with StubEhr(patients.no_results(), consent=False) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        page = launch(browser, live, ehr)
        assert page.status_code == 403
        assert "access not granted" in page.text and "access_denied" in page.text
        assert ehr.tokens == [] and not [r for r in ehr.fhir.requests if r.path == "Observation"]
        # the launch is over: the page does not open
        assert browser.get(f"{live.url}/history", timeout=10).status_code == 401


def test_a_refused_token_request(live, make_app, launch_settings):
    with StubEhr(patients.no_results()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        ehr.auth.add("token", Reply(status=400, body={"error": "invalid_grant"}))
        page = launch(browser, live, ehr)
        assert page.status_code == 403 and "invalid_grant" in page.text


@pytest.mark.parametrize(
    "reply,status",
    [
        (Reply(status=500, body="boom"), 502),
        (Reply(body="not json"), 502),
        (Reply(body={"access_token": "t", "token_type": "Bearer"}), 400),  # no patient
    ],
)
def test_token_endpoint_failures_are_pages(live, make_app, launch_settings, reply, status):
    with StubEhr(patients.no_results()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        ehr.auth.add("token", reply)
        page = launch(browser, live, ehr)
        assert page.status_code == status and page.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "configuration",
    [
        Reply(status=404, body={}),
        Reply(body={"authorization_endpoint": "x"}),
        Reply(body="["),
        Reply(
            body={
                "authorization_endpoint": "http://ehr.example.org/authorize",  # in clear
                "token_endpoint": "https://ehr.example.org/token",
            }
        ),
    ],
)
def test_unusable_smart_configuration(live, make_app, launch_settings, configuration):
    with StubEhr(patients.no_results()) as ehr:
        mount(live, make_app, launch_settings, ehr)
        ehr.fhir.add(".well-known/smart-configuration", configuration)
        page = requests.get(
            f"{live.url}/launch", params={"iss": ehr.iss, "launch": LAUNCH_ID}, timeout=10
        )
        assert page.status_code == 502 and "SMART configuration" in page.text


def test_fhir_server_failing_after_launch(live, make_app, launch_settings):
    with StubEhr(patients.no_results()) as ehr, requests.Session() as browser:
        mount(live, make_app, launch_settings, ehr)
        ehr.fhir.add("Observation", Reply(status=503, body={}))
        page = launch(browser, live, ehr)
        assert page.status_code == 502 and "record unavailable" in page.text


def test_requests_outside_a_launch(make_app, launch_settings):
    app = make_app(
        launch_settings.with_overrides(
            public_base_url="http://127.0.0.1:9", smart_allowed_issuers=("http://127.0.0.1:9/fhir",)
        )
    )
    client = app.test_client()
    cases = {
        "/launch": 400,  # no iss / launch
        "/launch?iss=http://127.0.0.1:9/fhir": 400,  # no launch
        "/history/callback?code=x&state=y": 400,  # no launch in progress
        "/history": 401,
    }
    for path, status in cases.items():
        response = client.get(path)
        assert response.status_code == status, path
        assert response.mimetype == "text/html" and b"<h1>" in response.data


def test_not_configured_is_404(client):
    for path in ("/launch?iss=x&launch=y", "/history/callback", "/history"):
        assert client.get(path).status_code == 404


def test_sessions_expire_and_do_not_leak_across_keys(store):  # noqa: F811 - the fixture
    """On SQLite and on PostgreSQL (the store fixture of test_store)."""
    engine = store.engine
    sessions = SessionStore(store, SECRET)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    key = sessions.create({"state": "s"}, now=now)
    other = sessions.create({"state": "t"}, now=now)
    assert sessions.get(key, now=now) == {"state": "s"}
    assert sessions.get(other, now=now) == {"state": "t"}
    assert sessions.get("guess", now=now) is None and sessions.get(None, now=now) is None
    assert sessions.get(key, now=now + timedelta(hours=2)) is None
    # another secret cannot read the rows
    assert SessionStore(store, "another-secret-" + "y" * 40).get(key, now=now) is None
    # rows hold neither the browser's key nor readable data
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT key_hash, data FROM smart_session")).all()
    assert rows and all(key not in r.key_hash and "access_token" not in r.data for r in rows)
    sessions.replace(key, {"access_token": "t"}, now=now, expires_at=now + timedelta(minutes=5))
    assert sessions.get(key, now=now + timedelta(minutes=6)) is None
    sessions.delete(other)
    assert sessions.get(other, now=now) is None


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CDS_SMART_CLIENT_ID": "c"}, "CDS_SMART_ALLOWED_ISSUERS"),
        ({"CDS_SMART_CLIENT_ID": "c", "CDS_SMART_ALLOWED_ISSUERS": "https://ehr/fhir"}, "CDS_PUBLIC_BASE_URL"),
        ({"CDS_SMART_CLIENT_ID": "c", "CDS_SMART_ALLOWED_ISSUERS": "https://ehr/fhir", "CDS_PUBLIC_BASE_URL": "https://cds"}, "CDS_SECRET_KEY"),
        ({"CDS_SECRET_KEY": "short"}, "CDS_SECRET_KEY"),
        ({"CDS_SMART_ALLOWED_ISSUERS": "http://ehr.example.org/fhir"}, "CDS_SMART_ALLOWED_ISSUERS"),
        ({"CDS_SMART_ALLOWED_ISSUERS": "ftp://ehr/fhir"}, "CDS_SMART_ALLOWED_ISSUERS"),
    ],
)
def test_smart_settings_are_refused_when_incomplete(env, message):
    from cds_service.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_smart_settings():
    s = Settings.from_env(
        {
            "CDS_SMART_CLIENT_ID": "vitd",
            "CDS_SMART_ALLOWED_ISSUERS": "https://a.example/fhir/, http://127.0.0.1:8081/fhir",
            "CDS_PUBLIC_BASE_URL": "https://cds.example",
            "CDS_SECRET_KEY": "k" * 32,
        }
    )
    assert s.smart_enabled and s.smart_allowed_issuers == (
        "https://a.example/fhir",
        "http://127.0.0.1:8081/fhir",
    )
    assert not Settings.from_env({}).smart_enabled


def test_store_down_is_a_503_page(live, make_app, launch_settings, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with StubEhr(patients.no_results()) as ehr:
        mount(live, make_app, launch_settings, ehr)
        monkeypatch.setattr(SessionStore, "create", down)
        page = requests.get(
            f"{live.url}/launch", params={"iss": ehr.iss, "launch": LAUNCH_ID}, timeout=10
        )
        assert page.status_code == 503 and "service unavailable" in page.text
