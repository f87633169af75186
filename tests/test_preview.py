"""/preview: a development surface, on by default only when auth is off; it builds requests for
fixture patients and renders card markdown without ever letting card text become HTML."""

from __future__ import annotations

import json
import re

import pytest

from cds_service import Settings, fixtures
from cds_service.config import ConfigError


@pytest.mark.parametrize(
    "auth_disabled,preview,status",
    [(True, None, 200), (False, None, 404), (False, True, 200), (True, False, 404)],
)
def test_preview_on_by_default_only_without_auth(make_app, settings, auth_disabled, preview, status):
    app = make_app(settings.with_overrides(auth_disabled=auth_disabled, preview=preview))
    assert app.test_client().get("/preview").status_code == status


def test_cds_preview_setting():
    assert Settings.from_env({}).preview is None
    assert Settings.from_env({"CDS_PREVIEW": "1"}).preview_enabled is True
    assert Settings.from_env({"CDS_PREVIEW": "0", "CDS_AUTH_DISABLED": "1"}).preview_enabled is False
    assert Settings.from_env({"CDS_AUTH_DISABLED": "1"}).preview_enabled is True
    with pytest.raises(ConfigError, match="CDS_PREVIEW"):
        Settings.from_env({"CDS_PREVIEW": "maybe"})


def test_page_lists_every_patient_hook_and_draft_order(client):
    reply = client.get("/preview")
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    html = reply.get_data(as_text=True)
    for name in fixtures.names():
        assert f'<option value="{name}">' in html
    for key in fixtures.draft_library():
        assert f'<option value="{key}">' in html
    for service in fixtures.HOOKS:
        assert f'value="{service}"' in html
    assert "Content-Security-Policy" in reply.headers
    assert "script-src 'self'" in reply.headers["Content-Security-Policy"]


def test_page_loads_nothing_from_elsewhere(client):
    html = client.get("/preview").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/preview/static/") for s in sources), sources
    for asset in sources:
        reply = client.get(asset)
        assert reply.status_code == 200
        reply.close()


def test_record_text_is_escaped_in_the_page(client, monkeypatch):
    real = fixtures.expectations()
    hostile = {**real, "adult-deficient": {**real["adult-deficient"], "about": "<img src=x onerror=alert(1)>"}}
    monkeypatch.setattr(fixtures, "expectations", lambda: hostile)
    html = client.get("/preview").get_data(as_text=True)
    assert "<img" not in html
    data = re.search(r'<script type="application/json" id="patients-data">(.*?)</script>', html, re.S)
    patients = json.loads(data.group(1))
    assert patients[0]["about"] == "<img src=x onerror=alert(1)>"  # intact as data, inert as HTML


def test_request_for_a_patient_is_answered_by_the_service(client):
    body = client.get(
        "/preview/request.json?patient=adult-deficient&service=vitamin-d-order-sign"
    ).get_json()
    assert body["hook"] == "order-sign" and body["context"]["patientId"] == "adult-deficient"
    reply = client.post("/cds-services/vitamin-d-order-sign", json=body)
    assert [c["source"]["topic"]["code"] for c in reply.get_json()["cards"]] == ["vitd-deficiency"]


def test_request_with_a_draft_from_the_library(client):
    body = client.get(
        "/preview/request.json?patient=warfarin-d3k2-draft&service=vitamin-d-order-select"
        "&draft=uspstf-woman/draft-d400"
    ).get_json()
    (order,) = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    assert order["id"] == "draft-d400"
    assert order["subject"] == {"reference": "Patient/warfarin-d3k2-draft"}
    assert body["context"]["selections"] == ["MedicationRequest/draft-d400"]


def test_request_with_no_draft(client):
    body = client.get(
        "/preview/request.json?patient=warfarin-d3k2-draft&service=vitamin-d-order-sign&draft=none"
    ).get_json()
    assert "entry" not in body["context"]["draftOrders"] or not body["context"]["draftOrders"]["entry"]


@pytest.mark.parametrize(
    "query,status,error",
    [
        ("patient=nobody&service=vitamin-d-order-sign", 404, "unknown patient"),
        ("patient=../etc&service=vitamin-d-order-sign", 404, "unknown patient"),
        ("patient=adult-deficient&service=nope", 400, "unknown service"),
        ("patient=adult-deficient&service=vitamin-d-order-sign&draft=x/y", 404, "unknown draft order"),
    ],
)
def test_request_errors_are_json(client, query, status, error):
    reply = client.get(f"/preview/request.json?{query}")
    assert reply.status_code == status and reply.get_json()["error"] == error


def test_markdown_renders_markup_but_never_html_from_the_text(client):
    text = (
        "**25(OH)D 12 ng/mL**\n\n- one\n- two\n\n<script>alert(1)</script> "
        "<img src=x onerror=alert(2)> [click](javascript:alert(3)) [guideline](https://example.org/g)"
    )
    (html,) = client.post("/preview/markdown", json={"texts": [text]}).get_json()["html"]
    assert "<strong>25(OH)D 12 ng/mL</strong>" in html and "<li>one</li>" in html
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org/g">guideline</a>' in html


def test_markdown_of_real_cards_keeps_escaped_record_text_as_text(client):
    body = fixtures.load("adult-deficient").request("vitamin-d-patient-view")
    (card,) = client.post("/cds-services/vitamin-d-patient-view", json=body).get_json()["cards"]
    (html,) = client.post("/preview/markdown", json={"texts": [card["detail"]]}).get_json()["html"]
    assert "<strong>" in html and "**" not in html


@pytest.mark.parametrize(
    "body", [None, {}, {"texts": "x"}, {"texts": [1]}, {"texts": ["x"] * 51}, {"texts": ["x" * 20_001]}]
)
def test_markdown_bad_bodies(client, body):
    reply = client.post("/preview/markdown", data=json.dumps(body), content_type="application/json")
    assert reply.status_code == 400 and "error" in reply.get_json()


def test_page_without_the_fixtures_directory_says_so(client, monkeypatch, tmp_path):
    monkeypatch.setattr(fixtures, "PATIENTS_DIR", tmp_path / "patients")
    monkeypatch.setattr(fixtures, "EXPECTED_FILE", tmp_path / "expected.json")
    reply = client.get("/preview")
    assert reply.status_code == 200
    assert "No fixture patients found" in reply.get_data(as_text=True)
    missing = client.get("/preview/request.json?patient=adult-deficient&service=vitamin-d-order-sign")
    assert missing.status_code == 404


def test_every_fixture_patient_can_be_previewed_with_every_hook(client):
    expected = fixtures.expectations()
    for name in fixtures.names():
        for service in fixtures.HOOKS:
            body = client.get(f"/preview/request.json?patient={name}&service={service}").get_json()
            reply = client.post(f"/cds-services/{service}", json=body)
            assert reply.status_code == 200, (name, service, reply.get_json())
            topics = sorted(c["source"]["topic"]["code"] for c in reply.get_json()["cards"])
            assert topics == sorted(expected[name]["default"][service]), (name, service)


def test_history_picture_of_a_fixture_patient(client):
    reply = client.get("/preview/history/warfarin-d3k2-draft")
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    html = reply.get_data(as_text=True)
    assert "<title>Vitamin D history</title>" in html and "<svg" in html
    assert "Warfarin Sodium 5 MG Oral Tablet" in html
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert client.get("/preview/history/nobody").status_code == 404


def test_every_fixture_patient_has_a_history_picture(client):
    for name in fixtures.names():
        reply = client.get(f"/preview/history/{name}")
        assert reply.status_code == 200, name
