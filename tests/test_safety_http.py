"""Prescribing-safety cards through HTTP on the fixture patients, in all three gathering modes
(full prefetch; no prefetch; OperationOutcome in prefetch): the indicator and the exact
suggestion actions, the same in every mode. And feedback: an `overridden` outcome with one of
the card's own override reasons is stored with the card's topic (issue 5 item 7)."""

from __future__ import annotations

import json

import pytest

from cds_service import fixtures
from cds_service.registry import prefetch_keys

from .fhir_stub import FhirStub

SIGN = "vitamin-d-order-sign"
SELECT = "vitamin-d-order-select"
VIEW = "vitamin-d-patient-view"
INR = "create ServiceRequest 6301-6"

# fixture, service -> [(topic, indicator, [suggestion actions joined by " + "])]
EXPECTED = {
    ("warfarin-d3k2-draft", SIGN): [
        (
            "vka-vitamin-k-interaction",
            "warning",
            ["create MedicationRequest 199362 + delete MedicationRequest/draft-d3k2", INR],
        )
    ],
    ("warfarin-k2-both-active", VIEW): [("vka-vitamin-k-interaction", "warning", [INR])],
    ("vka-dstu2-k2-order", SELECT): [
        ("vka-vitamin-k-interaction", "warning", ["delete MedicationOrder/mo-k2", INR])
    ],
    ("vka-atc-contained-k2-draft", SIGN): [
        (
            "vka-vitamin-k-interaction",
            "warning",
            ["delete MedicationRequest/draft-k2-contained", INR],
        )
    ],
    ("vka-warfarin-draft-k2-statement", SIGN): [("vka-vitamin-k-interaction", "warning", [INR])],
    ("vka-phytonadione-reversal", SIGN): [("vka-vitamin-k-interaction", "info", [])],
    ("doac-apixaban-k2-draft", SIGN): [],
    ("heparin-enoxaparin-d3k2-draft", SIGN): [],
    ("warfarin-vitamin-k-free-draft", SIGN): [],
    ("warfarin-d3-only-draft", SELECT): [],
    ("high-dose-single-megadose", SIGN): [("vitd-high-dose", "warning", [])],
    ("ergocalciferol-d2-weekly-draft", SELECT): [
        (
            "vitd-ergocalciferol",
            "info",
            ["create MedicationRequest 705728 + delete MedicationRequest/draft-d2"],
        )
    ],
    ("calcium-split-caco3-draft", SIGN): [("calcium-dose-split", "info", [])],
    ("calcium-kidney-stones-draft", SIGN): [
        ("calcium-kidney-stones", "warning", ["delete MedicationRequest/draft-caco3"])
    ],
    ("hypercalcemia-calcium-high-d3-draft", SIGN): [
        (
            "vitd-hypercalcemia-risk",
            "warning",
            [
                "create ServiceRequest 29265-6 + create ServiceRequest 2731-8"
                " + create ServiceRequest 2160-0 + delete MedicationRequest/draft-d1000",
                "create ServiceRequest 1994-3 + create ServiceRequest 2731-8"
                " + create ServiceRequest 2160-0 + delete MedicationRequest/draft-d1000",
            ],
        )
    ],
}


def _route(key: str, patient_id: str) -> str:
    template = next(k.template for k in prefetch_keys() if k.key == key)
    return template.split("?", 1)[0].replace("{{context.patientId}}", patient_id)


def summarise(card: dict) -> tuple[str, str, list[str]]:
    rows = []
    for suggestion in card.get("suggestions", []):
        parts = []
        for action in suggestion["actions"]:
            if action["type"] == "delete":
                parts.append(f"delete {action['resourceId']}")
            else:
                resource = action["resource"]
                concept = resource.get("medicationCodeableConcept") or resource["code"]
                parts.append(f"create {resource['resourceType']} {concept['coding'][0]['code']}")
        rows.append(" + ".join(parts))
    return card["source"]["topic"]["code"], card["indicator"], rows


def call(client, service: str, body: dict):
    return client.post(
        f"/cds-services/{service}", data=json.dumps(body), content_type="application/json"
    )


@pytest.mark.parametrize(("name", "service"), sorted(EXPECTED))
def test_safety_cards_in_every_gathering_mode(client, name, service):
    fixture = fixtures.load(name)
    with FhirStub() as stub:
        for key in prefetch_keys():
            stub.add(_route(key.key, fixture.patient_id), fixture.search(key.key))
        for mode in fixtures.MODES:
            reply = call(client, service, fixture.request(service, mode, fhir_server=stub.base_url))
            assert reply.status_code == 200, (mode, reply.get_json())
            cards = reply.get_json()["cards"]
            assert [summarise(c) for c in cards] == EXPECTED[(name, service)], mode
            for card in cards:
                assert card["source"]["url"].startswith("https://")
                if card["indicator"] == "warning":
                    assert card["overrideReasons"]
                for suggestion in card.get("suggestions", []):
                    for action in suggestion["actions"]:
                        if action["type"] == "create":
                            subject = action["resource"]["subject"]["reference"]
                            assert subject == f"Patient/{fixture.patient_id}"


def test_override_of_a_vka_card_is_stored_with_its_topic(client, app):
    fixture = fixtures.load("warfarin-d3k2-draft")
    reply = call(client, SIGN, fixture.request(SIGN))
    (card,) = reply.get_json()["cards"]
    reason = next(r for r in card["overrideReasons"] if r["code"] == "inr-monitored")
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-25T10:00:00Z",
                "overrideReason": {"reason": reason, "userComment": "Patient Jane Doe, INR Friday"},
            }
        ]
    }
    stored = client.post(
        f"/cds-services/{SIGN}/feedback", data=json.dumps(feedback), content_type="application/json"
    )
    assert stored.status_code == 200
    assert stored.get_json() == {"received": 1, "stored": 1}
    rows = app.extensions["vitd.runtime"].store.feedback_for_card(card["uuid"])
    assert len(rows) == 1
    row = rows[0]
    assert row["topic"] == "vka-vitamin-k-interaction"
    assert row["outcome"] == "overridden"
    assert (row["override_reason_system"], row["override_reason_code"]) == (
        "urn:vitd-cds:override-reason",
        "inr-monitored",
    )
    assert "Jane Doe" not in json.dumps(row, default=str)  # free-text comments are not stored


def test_accepting_the_replacement_suggestion_is_stored(client, app):
    fixture = fixtures.load("warfarin-d3k2-draft")
    (card,) = call(client, SELECT, fixture.request(SELECT)).get_json()["cards"]
    remove = card["suggestions"][0]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": remove["uuid"]}],
                "outcomeTimestamp": "2026-11-25T10:01:00Z",
            }
        ]
    }
    reply = client.post(
        f"/cds-services/{SELECT}/feedback",
        data=json.dumps(feedback),
        content_type="application/json",
    )
    assert reply.status_code == 200
    (row,) = app.extensions["vitd.runtime"].store.feedback_for_card(card["uuid"])
    assert row["topic"] == "vka-vitamin-k-interaction"
    assert json.loads(row["accepted_suggestion_ids"]) == [remove["uuid"]]
