"""Analytics (contract §7): a scenario is sent through HTTP (cards, feedback, snoozes, shadow
mode, two weeks by the injected clock), then the report must count exactly what was sent, on
SQLite and on PostgreSQL; `GET /analytics` is 404 without its token; the page in a browser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from cds_service import analytics
from cds_service.cli import main

from .browser import chromium, save_screenshot
from .builders import full_record, hook_request

PV = "vitamin-d-patient-view"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday
TOKEN = "analytics-token-0123456789"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _record(pid: str) -> dict:
    record = full_record()
    record["patient"]["id"] = pid
    for key in ("observations", "medicationRequests", "conditions"):
        for entry in record[key].get("entry", []):
            entry["resource"]["subject"]["reference"] = f"Patient/{pid}"
    return record


def _deficiency(client, pid: str) -> dict | None:
    reply = client.post(f"/cds-services/{PV}", json=hook_request(prefetch=_record(pid), pid=pid))
    assert reply.status_code == 200
    cards = {c["source"]["topic"]["code"]: c for c in reply.get_json()["cards"]}
    assert "osteoporosis-calcium-vitd" not in cards  # silent for this client
    return cards.get("vitd-deficiency")


def _feedback(client, card, outcome, code=None):
    item = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-02T09:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    if code:
        item["overrideReason"] = {"reason": {"system": "urn:vitd-cds:override-reason", "code": code}}
    reply = client.post(f"/cds-services/{PV}/feedback", json={"feedback": [item, item]})
    assert reply.status_code == 200


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def scenario_app(request, make_app, settings, tmp_path):
    """The scenario, sent through HTTP; the app's store holds what it recorded."""
    url = settings.database_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    clients = tmp_path / "clients.toml"
    clients.write_text('[default]\nsilent_topics = ["osteoporosis-calcium-vitd"]\n')
    app = make_app(
        settings.with_overrides(
            database_url=url, clients_file=str(clients), analytics_token=TOKEN
        )
    )
    clock = Clock(T0)
    app.extensions["vitd.runtime"].clock = clock
    client = app.test_client()
    # week 1: pat-1 twice, pat-2 once
    first, second = _deficiency(client, "pat-1"), _deficiency(client, "pat-1")
    third = _deficiency(client, "pat-2")
    _feedback(client, first, "accepted")
    _feedback(client, second, "overridden", "snooze-30d")
    _feedback(client, third, "overridden", "treated-elsewhere")
    # week 2: pat-1 is snoozed; pat-2's card is overridden for 90 days
    clock.now = T0 + timedelta(days=7)
    assert _deficiency(client, "pat-1") is None
    _feedback(client, _deficiency(client, "pat-2"), "overridden", "patient-declines")
    return app


def _row(report, topic):
    (row,) = [r for r in report["rows"] if r["topic"] == topic]
    return row


def test_the_report_counts_what_the_scenario_sent(scenario_app):
    store = scenario_app.extensions["vitd.runtime"].store
    now = T0 + timedelta(days=8)
    report = analytics.build_report(store, now - timedelta(days=30), now).as_dict()
    deficiency = _row(report, "vitd-deficiency")
    assert deficiency == {
        "topic": "vitd-deficiency",
        "client": "default",
        "issued": 4,
        "patients": 2,
        "accepted": 1,
        "overridden": 3,
        "snoozed": 2,
        "suppressed": 1,
        "silent": 0,
        "deduplicated": 0,
        "reasons": {"snooze-30d": 1, "treated-elsewhere": 1, "patient-declines": 1},
        "acceptance_rate": 0.25,
        "override_rate": 0.75,
    }
    osteo = _row(report, "osteoporosis-calcium-vitd")
    assert (osteo["issued"], osteo["silent"], osteo["patients"], osteo["acceptance_rate"]) == (0, 5, 0, None)
    assert report["weekly"] == [
        {"week": "2026-11-02", "topic": "vitd-deficiency", "issued": 3, "accepted": 1, "overridden": 2},
        {"week": "2026-11-09", "topic": "vitd-deficiency", "issued": 1, "accepted": 0, "overridden": 1},
    ]
    # --since: the second week only
    later = analytics.build_report(store, T0 + timedelta(days=7), now).as_dict()
    assert (_row(later, "vitd-deficiency")["issued"], _row(later, "vitd-deficiency")["overridden"]) == (1, 1)


def test_report_command_prints_the_same_numbers(scenario_app, monkeypatch, tmp_path):
    settings = scenario_app.extensions["vitd.settings"]
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    out = tmp_path / "report.json"
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--since", "2026-10-01", "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert _row(data, "vitd-deficiency")["issued"] == 4
    assert _row(data, "vitd-deficiency")["reasons"]["snooze-30d"] == 1
    text = runner.invoke(main, ["report", "--since", "2026-10-01"])
    assert text.exit_code == 0
    line = next(x for x in text.output.splitlines() if x.startswith("vitd-deficiency"))
    assert line.split() == ["vitd-deficiency", "default", "4", "2", "1", "3", "2", "1", "0", "0", "25.0", "75.0"]
    assert runner.invoke(main, ["report", "--since", "yesterday"]).exit_code == 2


def test_analytics_needs_its_token(scenario_app, make_app, settings):
    client = scenario_app.test_client()
    assert client.get("/analytics").status_code == 404
    assert client.get("/analytics", headers={"Authorization": "Bearer wrong-token-000000000"}).status_code == 404
    reply = client.get("/analytics?since=2026-10-01", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200 and reply.content_type.startswith("text/html")
    page = reply.get_data(as_text=True)
    assert page.count("<svg") == 3 and "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<td>vitd-deficiency</td><td>default</td><td>4</td><td>2</td><td>1</td><td>3</td>" in page
    bad = client.get("/analytics?since=soon", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid since"
    unset = make_app(settings).test_client()  # no CDS_ANALYTICS_TOKEN: no page at all
    assert unset.get("/analytics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


@pytest.mark.slow
def test_the_analytics_page_in_a_browser(make_app, settings, tmp_path):
    from .live_server import LiveServer

    clients = tmp_path / "clients.toml"
    clients.write_text('[default]\nsilent_topics = ["osteoporosis-calcium-vitd"]\n')
    app = make_app(settings.with_overrides(clients_file=str(clients), analytics_token=TOKEN))
    clock = Clock(T0 - timedelta(days=21))
    app.extensions["vitd.runtime"].clock = clock
    client = app.test_client()
    for week in range(4):  # four weeks of cards and answers
        clock.now = T0 - timedelta(days=21) + timedelta(days=7 * week)
        for n in range(3):
            card = _deficiency(client, f"pat-{week}-{n}")
            if n == 0:
                _feedback(client, card, "accepted")
            elif n == 1 or week % 2:
                _feedback(client, card, "overridden", ["treated-elsewhere", "snooze-30d"][n % 2])
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}}
        )
        driver.get(f"{live.url}/analytics?since=2026-10-01")
        from selenium.webdriver.common.by import By

        assert driver.find_element(By.TAG_NAME, "h1").text == "Cards and feedback"
        cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#summary tbody tr:last-child td")]
        assert cells[:4] == ["vitd-deficiency", "default", "12", "12"]
        for figure in ("acceptance", "override", "reasons"):
            svg = driver.find_element(By.CSS_SELECTOR, f"#{figure} svg")
            assert svg.size["width"] > 600 and svg.size["height"] > 60
        assert len(driver.find_elements(By.CSS_SELECTOR, "#acceptance polyline")) == 1
        bars = driver.find_elements(By.CSS_SELECTOR, "#reasons rect")
        assert len(bars) == 2
        save_screenshot(driver, "analytics")


def test_cards_stored_before_the_roll_ups_are_counted_after_the_migration(tmp_path):
    from importlib import resources

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from cds_service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    config = Config()
    config.set_main_option("script_location", str(resources.files("cds_service").joinpath("migrations")))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            sa.text(
                "INSERT INTO issued_card (card_uuid, service_id, topic, indicator, issued_at) VALUES "
                "('c1', 'vitamin-d-patient-view', 'vitd-deficiency', 'warning', '2026-11-03 10:00:00.000000'),"
                "('c2', 'vitamin-d-patient-view', 'vitd-deficiency', 'warning', '2026-11-04 10:00:00.000000')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO feedback (item_hash, service_id, card_uuid, outcome, override_reason_code,"
                " outcome_timestamp, received_at) VALUES ('h1', 'vitamin-d-patient-view', 'c2',"
                " 'overridden', 'treated-elsewhere', '2026-11-04T10:00:00Z', '2026-11-04 10:00:00.000000')"
            )
        )
    try:
        store.migrate()
        report = analytics.build_report(store, T0, T0 + timedelta(days=7)).as_dict()
    finally:
        store.dispose()
    row = _row(report, "vitd-deficiency")
    assert (row["client"], row["issued"], row["overridden"], row["reasons"]) == (
        "(unrecorded)", 2, 1, {"treated-elsewhere": 1}
    )
