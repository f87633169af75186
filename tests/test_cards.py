"""Cards as a clinician and an EHR see them: contract §3 on every card the fixtures produce,
the data named in the detail, FHIR suggestions that validate, and record text escaped."""

from __future__ import annotations

import json

import jinja2
import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service import cards, fixtures
from cds_service.rules import TOPIC_IDS as TOPICS
from tests import builders as b

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MODELS = {"MedicationRequest": MedicationRequest, "ServiceRequest": ServiceRequest}


def all_cards(client):
    """(fixture, service, card) for every card every fixture gets (default profile)."""
    out = []
    for name in fixtures.names():
        fixture = fixtures.load(name)
        for service in fixtures.HOOKS:
            reply = client.post(f"/cds-services/{service}", json=fixture.request(service))
            assert reply.status_code == 200
            out += [(fixture, service, card) for card in reply.get_json()["cards"]]
    return out


def empty_values(value, path="card"):
    if value is None or value == "" or value == [] or value == {}:
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from empty_values(v, f"{path}.{k}")
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from empty_values(v, f"{path}[{n}]")


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    from cds_service import Settings, create_app

    db = tmp_path_factory.mktemp("cards") / "s.db"
    app = create_app(
        Settings(database_url=f"sqlite:///{db}", auth_disabled=True, validate_responses=True)
    )
    found = all_cards(app.test_client())
    app.extensions["vitd.runtime"].store.dispose()
    return found


def test_fixtures_produce_cards_of_many_topics(produced):
    assert len({c["source"]["topic"]["code"] for _, _, c in produced}) >= 8


def test_every_card_follows_the_contract(produced):
    for fixture, service, card in produced:
        where = (fixture.name, service, card["source"]["topic"]["code"])
        assert list(empty_values(card)) == [], where
        assert len(card["summary"]) <= 140, where
        assert card["indicator"] in ("info", "warning", "critical"), where
        assert card["source"]["label"] and card["source"]["url"].startswith("https://"), where
        assert card["source"]["topic"]["system"] == "urn:vitd-cds:topic", where
        assert card["source"]["topic"]["display"], where
        if card["indicator"] != "info":
            assert card["overrideReasons"], where
            assert all(r["display"] for r in card["overrideReasons"]), where
        if "suggestions" in card:
            assert card["selectionBehavior"] == "at-most-one", where
        else:
            assert "selectionBehavior" not in card, where


def test_every_suggestion_is_valid_fhir_for_this_patient(produced):
    seen = 0
    for fixture, _service, card in produced:
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"] and suggestion["uuid"]
            for action in suggestion["actions"]:
                assert action["description"]
                if action["type"] == "delete":
                    kind, _, rid = action["resourceId"].partition("/")
                    assert kind in ("MedicationRequest", "MedicationOrder", "ServiceRequest") and rid
                    assert rid in {d["id"] for d in fixture.drafts}
                    continue
                resource = action["resource"]
                MODELS[resource["resourceType"]].model_validate(resource)
                assert resource["status"] == "draft" and resource["intent"] == "order"
                assert resource["subject"] == {"reference": f"Patient/{fixture.patient_id}"}
                if resource["resourceType"] == "MedicationRequest":
                    concept = resource["medicationCodeableConcept"]
                    assert concept["text"] and concept["coding"][0]["system"] == RXNORM
                    assert concept["coding"][0]["code"].isdigit()
                    dose = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
                    assert dose["code"] in ("TAB", "CAP") and dose["value"] >= 1
                    assert dose["system"].endswith("/v3-orderableDrugForm")
                else:
                    assert resource["code"]["coding"][0]["system"] == "http://loinc.org"
                seen += 1
    assert seen > 20


def test_status_cards_name_value_unit_date_and_code(produced):
    for fixture, _, card in produced:
        topic = card["source"]["topic"]["code"]
        if topic not in ("vitd-deficiency", "vitd-insufficiency", "vitd-high-level"):
            continue
        newest = max(
            (
                r
                for r in fixture.resources
                if r["resourceType"] == "Observation"
                and r["code"]["coding"][0]["code"] in ("62292-8", "1989-3", "14635-7")
            ),
            key=lambda r: r["effectiveDateTime"],
        )
        assert newest["effectiveDateTime"][:10] in card["detail"], fixture.name
        assert newest["code"]["coding"][0]["code"] in card["detail"], fixture.name
        assert "ng/mL" in card["detail"] and "Source:" not in card["detail"]


def test_deficiency_card_offers_the_two_adult_courses(produced):
    (card,) = [
        c for f, s, c in produced if f.name == "adult-deficient" and s == "vitamin-d-patient-view"
    ]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == [
        "50,000 IU weekly × 8 wk, then 2,000 IU daily",
        "6,000 IU daily × 8 wk, then 2,000 IU daily",
    ]
    weekly = [a["resource"] for a in card["suggestions"][0]["actions"]]
    repeat = weekly[0]["dosageInstruction"][0]["timing"]["repeat"]
    assert repeat == {
        "frequency": 1,
        "period": 1,
        "periodUnit": "wk",
        "boundsDuration": {
            "value": 8,
            "unit": "wk",
            "system": "http://unitsofmeasure.org",
            "code": "wk",
        },
    }
    # One 50,000 IU capsule per dose (strength × units = the dose shown).
    assert weekly[0]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 1
    assert weekly[0]["medicationCodeableConcept"]["text"] == "Cholecalciferol 50000 UNT Oral Capsule"
    assert weekly[1]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"]
    assert weekly[2]["code"]["coding"][0]["code"] == "62292-8"


def test_order_sign_replaces_the_under_treating_draft(produced):
    """The new order comes first and the delete last: the official sandbox applies only a
    suggestion's first action, which must never be the delete alone (issue 17)."""
    (card,) = [
        c for f, s, c in produced if f.name == "adult-deficient" and s == "vitamin-d-order-sign"
    ]
    for suggestion in card["suggestions"]:
        first, last = suggestion["actions"][0], suggestion["actions"][-1]
        assert first["type"] == "create"
        assert last["type"] == "delete" and last["resourceId"] == "MedicationRequest/draft-d400"


def test_no_suggestion_starts_with_a_delete(produced):
    for fixture, service, card in produced:
        for suggestion in card.get("suggestions", []):
            types = [a["type"] for a in suggestion["actions"]]
            if "create" in types:
                assert types[0] == "create", (fixture.name, service, suggestion["label"])


def test_k2_card_never_overstates_the_evidence(produced):
    details = [
        c["detail"] for _, _, c in produced if c["source"]["topic"]["code"] == "k2-consideration"
    ]
    assert details
    for detail in details:
        assert "no guideline recommends routine vitamin D + K2" in detail
        assert "may be considered" in detail


@pytest.mark.parametrize(
    "hostile",
    [
        "<img src=x onerror=alert(1)> D3 400 IU",
        "[click](javascript:alert(1)) cholecalciferol 400 IU",
        "**bold** `code` cholecalciferol 400 IU",
    ],
)
def test_record_text_is_escaped_in_the_detail(client, hostile):
    draft = b.medication_request("309263", hostile, mid="evil", dose=400, status="draft")
    draft["medicationCodeableConcept"]["coding"][0]["display"] = hostile
    record = {
        **b.full_record(),
        "observations": b.searchset(
            b.vitamin_d(12.0, when=fixtures.datetime.now(fixtures.UTC).date().isoformat())
        ),
        "medicationRequests": b.searchset(),
    }
    body = b.hook_request("vitamin-d-order-sign", prefetch=record, drafts=[draft])
    reply = client.post(
        "/cds-services/vitamin-d-order-sign", data=json.dumps(body), content_type="application/json"
    )
    (card,) = [
        c for c in reply.get_json()["cards"] if c["source"]["topic"]["code"] == "vitd-deficiency"
    ]
    detail = card["detail"]
    assert "<img" not in detail and "](javascript" not in detail and "**bold**" not in detail
    assert cards.md_escape(hostile) in detail


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("a & b", "a &amp; b"),
        ("[x](y)", "\\[x\\]\\(y\\)"),
        ("*_`#|~!", "\\*\\_\\`\\#\\|\\~\\!"),
        ("line\nbreak", "line break"),
        ("12.5 ng/mL", "12.5 ng/mL"),
    ],
)
def test_md_escape(text, escaped):
    assert cards.md_escape(text) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (50000, "50,000"),
        (12.5, "12.5"),
        (7142.857, "7,143"),
        (19.96, "20"),
        (0, "0"),
        (None, "unknown"),
    ],
)
def test_number_format(value, text):
    assert cards.fmt_number(value) == text


def test_every_topic_has_a_template_and_a_missing_one_is_refused(monkeypatch, tmp_path):
    cards.check_templates(TOPICS)
    monkeypatch.setattr(cards, "CARDS_DIR", tmp_path)
    cards.template.cache_clear()
    try:
        with pytest.raises(cards.CardTemplateError, match="cards/vitd-deficiency.toml"):
            cards.check_templates(("vitd-deficiency",))
        (tmp_path / "x.toml").write_text('title = "x"\nsummary = "{{ a"\ndetail = "d"\n')
        with pytest.raises(cards.CardTemplateError, match="cards/x.toml"):
            cards.template("x")
    finally:
        cards.template.cache_clear()


def test_templates_see_only_what_the_finding_gives():
    """No Jinja globals: a name the finding lacks is an error, never the repr of a builtin."""
    for env in (cards._SUMMARY_ENV, cards._DETAIL_ENV):
        with pytest.raises(jinja2.UndefinedError):
            env.from_string("{{ range }}").render({})
        with pytest.raises(jinja2.UndefinedError):
            env.from_string("{% for n in range(2) %}{{ n }}{% endfor %}").render({})
        assert env.from_string("{{ range }}").render({"range": "800 IU"}) == "800 IU"


@pytest.mark.parametrize(
    ("value", "text"), [(19.99, "19.99"), (20.03, "20.03"), (12.0, "12"), (100.04, "100.04")]
)
def test_levels_are_never_rounded_across_a_threshold(value, text):
    assert cards.fmt_ng(value) == text
    assert cards.fmt_level({"ng_ml": value, "comparator": None}) == f"{text} ng/mL"


def test_a_level_reported_in_nmol_shows_both_units():
    shown = cards.fmt_level(
        {"ng_ml": 19.99, "comparator": None, "raw_value": "49.9", "raw_unit": "nmol/L"}
    )
    # As reported first, the conversion to one decimal (contract §4 "Converted values").
    assert shown == "49.9 nmol/L (about 20.0 ng/mL)"
    eighteen = {"ng_ml": 45 / 2.496, "comparator": None, "raw_value": "45", "raw_unit": "nmol/L"}
    assert cards.fmt_level(eighteen) == "45 nmol/L (about 18.0 ng/mL)"


def test_detail_markdown_keeps_its_blocks_apart(produced):
    """Lists end before the next paragraph, so a markdown renderer does not run the text into a
    list item; the source is the card's `source` only, never repeated as a "Source:" paragraph
    (clients show `source` under the detail)."""
    for fixture, service, card in produced:
        detail = card["detail"]
        where = (fixture.name, service, card["source"]["topic"]["code"])
        assert "Source:" not in detail and detail.rstrip().endswith((".", ")")), where
        lines = detail.split("\n")
        for line, following in zip(lines, lines[1:], strict=False):
            if line.startswith("- "):
                assert following == "" or following.startswith(("- ", "  ")), (
                    where,
                    line,
                    following,
                )
