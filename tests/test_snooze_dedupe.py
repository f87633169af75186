"""Snooze from feedback and de-duplication at signing (contract §7), through HTTP with the real
feedback endpoint; time moves by the runtime's injectable clock, never by sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds_service import create_app

from .builders import full_record, hook_request, medication_request, searchset, vitamin_d
from .test_metrics import scrape, value

PV = "vitamin-d-patient-view"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app) -> Clock:
    c = Clock(T0)
    app.extensions["vitd.runtime"].clock = c
    return c


def view(client, record=None, pid="pat-1"):
    reply = client.post(f"/cds-services/{PV}", json=hook_request(prefetch=record or full_record(), pid=pid))
    assert reply.status_code == 200, reply.get_json()
    return {c["source"]["topic"]["code"]: c for c in reply.get_json()["cards"]}


def override(client, card, code, service=PV):
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-01T09:00:00Z",
        "overrideReason": {"reason": {"system": "urn:vitd-cds:override-reason", "code": code}},
    }
    reply = client.post(f"/cds-services/{service}/feedback", json={"feedback": [item]})
    assert reply.status_code == 200, reply.get_json()


def test_patient_view_cards_offer_the_two_snooze_reasons_after_their_own(client, clock):
    cards = view(client)
    reasons = [r["code"] for r in cards["vitd-deficiency"]["overrideReasons"]]
    assert reasons[-2:] == ["snooze-30d", "patient-declines"] and len(reasons) > 2
    assert all(r["display"] for r in cards["vitd-deficiency"]["overrideReasons"])
    info = [r["code"] for r in cards["osteoporosis-calcium-vitd"]["overrideReasons"]]
    assert info == ["snooze-30d", "patient-declines"]


def test_patient_view_offers_one_patient_declines_reason_and_order_sign_keeps_its_own(client, clock):
    """"Patient declined" (the card's own) beside "Patient declines: do not remind for 90
    days" were two choices for one answer on patient-view, and only the second snoozed."""
    reasons = view(client)["vitd-deficiency"]["overrideReasons"]
    declines = [r["code"] for r in reasons if "declin" in r["code"]]
    assert declines == ["patient-declines"]
    assert [r["code"] for r in reasons[:2]] == ["treated-elsewhere", "result-not-representative"]
    request = hook_request("vitamin-d-order-sign", prefetch=full_record(), drafts=[LOW_D])
    reply = client.post("/cds-services/vitamin-d-order-sign", json=request)
    assert reply.status_code == 200, reply.get_json()
    signed = {c["source"]["topic"]["code"]: c for c in reply.get_json()["cards"]}
    codes = [r["code"] for r in signed["vitd-deficiency"]["overrideReasons"]]
    assert "patient-declined" in codes and "patient-declines" not in codes


@pytest.mark.parametrize("code, days", [("snooze-30d", 30), ("patient-declines", 90)])
def test_a_snooze_lasts_its_window_to_the_second(client, clock, code, days):
    card = view(client)["vitd-deficiency"]
    override(client, card, code)
    clock.now = T0 + timedelta(days=days) - timedelta(seconds=1)
    shown = view(client)
    assert "vitd-deficiency" not in shown
    assert "osteoporosis-calcium-vitd" in shown  # only the topic overridden
    clock.now = T0 + timedelta(days=days)
    assert "vitd-deficiency" in view(client)


def test_the_snooze_window_is_configurable(make_app, settings):
    app = make_app(settings.with_overrides(snooze_days=7))
    clock = Clock(T0)
    app.extensions["vitd.runtime"].clock = clock
    client = app.test_client()
    override(client, view(client)["vitd-deficiency"], "snooze-30d")
    clock.now = T0 + timedelta(days=7) - timedelta(seconds=1)
    assert "vitd-deficiency" not in view(client)
    clock.now = T0 + timedelta(days=7)
    assert "vitd-deficiency" in view(client)


def test_a_snooze_is_per_patient_and_counted_in_metrics(client, clock):
    override(client, view(client)["vitd-deficiency"], "snooze-30d")
    clock.now = T0 + timedelta(days=1)
    assert "vitd-deficiency" not in view(client)
    other = full_record()
    other["patient"]["id"] = "pat-2"
    for key in ("observations", "medicationRequests", "conditions"):
        for entry in other[key].get("entry", []):
            entry["resource"]["subject"]["reference"] = "Patient/pat-2"
    assert "vitd-deficiency" in view(client, other, pid="pat-2")
    samples = scrape(client)
    assert value(
        samples, "vitd_cds_cards_withheld_total", service=PV, topic="vitd-deficiency", reason="suppressed"
    ) == 1


def test_a_newer_result_lifts_the_snooze(client, clock):
    override(client, view(client)["vitd-deficiency"], "patient-declines")
    clock.now = T0 + timedelta(days=20)
    older = full_record()  # the same level, dated before the feedback: still snoozed
    assert "vitd-deficiency" not in view(client, older)
    newer = full_record()
    newer["observations"] = searchset(vitamin_d(11.0, when="2026-11-15", oid="vd2"))
    assert "vitd-deficiency" in view(client, newer)


def test_a_snooze_survives_a_restart_and_is_shared_through_the_store(client, clock, settings):
    override(client, view(client)["vitd-deficiency"], "snooze-30d")
    second = create_app(settings)  # another worker, or the service after a restart
    try:
        second.extensions["vitd.runtime"].clock = Clock(T0 + timedelta(days=3))
        assert "vitd-deficiency" not in view(second.test_client())
    finally:
        second.extensions["vitd.runtime"].fhir.close()
        second.extensions["vitd.runtime"].store.dispose()


def test_other_override_reasons_and_acceptance_do_not_snooze(client, clock):
    card = view(client)["vitd-deficiency"]
    override(client, card, "treated-elsewhere")
    accepted = {
        "card": view(client)["osteoporosis-calcium-vitd"]["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-01T09:00:00Z",
        "acceptedSuggestions": [{"id": "x"}],
    }
    assert client.post(f"/cds-services/{PV}/feedback", json={"feedback": [accepted]}).status_code == 200
    clock.now = T0 + timedelta(days=1)
    assert {"vitd-deficiency", "osteoporosis-calcium-vitd"} <= set(view(client))


def test_a_critical_high_level_is_never_snoozed(client, clock):
    record = full_record()
    record["observations"] = searchset(vitamin_d(160.0))
    card = view(client, record)["vitd-high-level"]
    assert card["indicator"] == "critical"
    assert {"snooze-30d", "patient-declines"}.isdisjoint(r["code"] for r in card["overrideReasons"])
    override(client, card, "snooze-30d")  # sent anyway by a client that offers its own
    clock.now = T0 + timedelta(days=1)
    assert "vitd-high-level" in view(client, record)


LOW_D = medication_request(None, "Cholecalciferol 400 UNT Oral Tablet", mid="d3", status="draft", dose=400)
DRAFT = medication_request(
    "316672", "Cholecalciferol 50000 UNT Oral Capsule", mid="d1", status="draft", dose=50000
)


def order(client, service, drafts, user="Practitioner/doc-1"):
    body = hook_request(service, prefetch=full_record(), drafts=drafts)
    body["context"]["userId"] = user
    reply = client.post(f"/cds-services/{service}", json=body)
    assert reply.status_code == 200, reply.get_json()
    return [c["source"]["topic"]["code"] for c in reply.get_json()["cards"]]


def test_order_checks_are_never_snoozed(client, clock):
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    card_id = client.post(
        "/cds-services/vitamin-d-order-select",
        json=hook_request("vitamin-d-order-select", prefetch=full_record(), drafts=[DRAFT]),
    ).get_json()["cards"][0]
    override(client, card_id, "snooze-30d", service="vitamin-d-order-select")
    override(client, view(client)["vitd-deficiency"], "snooze-30d")
    clock.now = T0 + timedelta(days=1)
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    assert order(client, "vitamin-d-order-sign", [DRAFT]) == ["vitd-high-dose"]


@pytest.fixture
def dedupe_app(make_app, settings, tmp_path):
    path = tmp_path / "clients.toml"
    path.write_text("[default]\ndedupe_order_sign = true\n")
    app = make_app(settings.with_overrides(clients_file=str(path)))
    app.extensions["vitd.runtime"].clock = Clock(T0)
    return app


def test_without_dedupe_order_sign_repeats_the_card(client, clock):
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    assert order(client, "vitamin-d-order-sign", [DRAFT]) == ["vitd-high-dose"]


@pytest.mark.parametrize("later, repeated", [(timedelta(hours=12), False), (timedelta(hours=12, seconds=1), True)])
def test_dedupe_holds_for_12_hours(dedupe_app, later, repeated):
    client = dedupe_app.test_client()
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    dedupe_app.extensions["vitd.runtime"].clock.now = T0 + later
    assert order(client, "vitamin-d-order-sign", [DRAFT]) == (["vitd-high-dose"] if repeated else [])
    if not repeated:
        assert value(
            scrape(client), "vitd_cds_cards_withheld_total",
            service="vitamin-d-order-sign", topic="vitd-high-dose", reason="deduplicated",
        ) == 1


def test_dedupe_needs_the_same_draft_content_and_the_same_user(dedupe_app):
    client = dedupe_app.test_client()
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    changed = {**DRAFT, "note": [{"text": "edited after selection"}]}  # same card, new content
    assert order(client, "vitamin-d-order-sign", [changed]) == ["vitd-high-dose"]
    assert order(client, "vitamin-d-order-sign", [DRAFT], user="Practitioner/doc-2") == ["vitd-high-dose"]
    assert order(client, "vitamin-d-order-sign", [DRAFT]) == []


def test_shown_cards_past_12_hours_and_ended_snoozes_are_purged(dedupe_app, monkeypatch):
    from cds_service import store as store_module

    monkeypatch.setattr(store_module, "PURGE_EVERY", 2)
    client = dedupe_app.test_client()
    runtime = dedupe_app.extensions["vitd.runtime"]
    override(client, view(client)["vitd-deficiency"], "snooze-30d")
    assert order(client, "vitamin-d-order-select", [DRAFT]) == ["vitd-high-dose"]
    import sqlalchemy as sa

    def counts():
        with runtime.store.engine.connect() as connection:
            return tuple(
                connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("shown_card", "snooze")
            )

    assert counts() == (1, 1)
    runtime.clock.now = T0 + timedelta(days=30)  # the snooze has ended, the card is old
    other = {**DRAFT, "id": "d2"}
    assert order(client, "vitamin-d-order-select", [other]) == ["vitd-high-dose"]  # 2nd call: purge
    assert counts() == (1, 0)  # only the card just shown is left
