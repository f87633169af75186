"""Cards link to the vitamin D history (a SMART app link) for vitd-* and
vka-vitamin-k-interaction topics, and only when the service knows its public URL."""

from __future__ import annotations

import re

import pytest

from cds_service import fixtures
from cds_service.cards import with_history_link

LINKED = re.compile(r"^(vitd-.+|vka-vitamin-k-interaction)$")
BASE = "https://cds.example.org"


SERVICES = ("vitamin-d-patient-view", "vitamin-d-order-select", "vitamin-d-order-sign")


def cards_of(client, name: str) -> list[dict]:
    fixture = fixtures.load(name)
    out = []
    for service in SERVICES:
        reply = client.post(f"/cds-services/{service}", json=fixture.request(service))
        assert reply.status_code == 200, reply.get_json()
        out += reply.get_json()["cards"]
    return out


def topic(card: dict) -> str:
    return card["source"]["topic"]["code"]


SMART = {
    "smart_client_id": "vitd-history",
    "smart_allowed_issuers": ("https://ehr.example.org/fhir",),
    "secret_key": "x" * 32,
}


def test_linked_topics_carry_the_launch_link(make_app, settings):
    client = make_app(settings.with_overrides(public_base_url=BASE + "/", **SMART)).test_client()
    linked, unlinked = set(), set()
    for name in fixtures.names():
        for card in cards_of(client, name):
            if LINKED.match(topic(card)):
                assert card["links"] == [
                    {"label": "Vitamin D history", "url": f"{BASE}/launch", "type": "smart"}
                ], topic(card)
                linked.add(topic(card))
            else:
                assert "links" not in card, topic(card)
                unlinked.add(topic(card))
    # both kinds were exercised, the VKA interaction and vitamin D status cards among them
    assert {"vka-vitamin-k-interaction", "vitd-deficiency"} <= linked and unlinked


def test_a_public_url_without_smart_launch_gives_no_link(make_app, settings):
    """Without SMART launch /launch answers 404: a link to it would only mislead."""
    client = make_app(settings.with_overrides(public_base_url=BASE)).test_client()
    found = cards_of(client, "warfarin-d3k2-draft")
    assert any(LINKED.match(topic(c)) for c in found)
    assert all("links" not in c for c in found)
    assert client.get("/launch").status_code == 404


def test_no_public_url_no_link(client):
    found = [card for name in fixtures.names() for card in cards_of(client, name)]
    assert any(LINKED.match(topic(c)) for c in found)
    assert all("links" not in c for c in found)


@pytest.mark.parametrize(
    "code,linked",
    [
        ("vitd-deficiency", True),
        ("vitd-high-dose", True),
        ("vka-vitamin-k-interaction", True),
        ("k2-consideration", False),
        ("osteoporosis-calcium-vitd", False),
        ("calcium-dose-split", False),
    ],
)
def test_which_topics_are_linked(code, linked):
    link = {"label": "Vitamin D history", "url": f"{BASE}/launch", "type": "smart"}
    card = with_history_link({"source": {"topic": {"code": code}}}, link)
    assert ("links" in card) is linked
    assert "links" not in with_history_link({"source": {"topic": {"code": code}}}, None)
