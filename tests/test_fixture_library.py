"""The synthetic patient library: at least 30 patients, valid FHIR R4, documented by a generated
README, and a checker (`cds-service check`) that catches a wrong answer. That every patient
gets exactly its expected topics in every gathering mode is tests/test_fixtures_e2e.py."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds_service import fixture_check, fixtures


def test_library_has_at_least_30_patients():
    assert len(fixtures.names()) >= 30


@pytest.mark.parametrize("name", fixtures.names())
def test_fixture_is_a_valid_r4_bundle_of_one_patient(name):
    """Everything is FHIR R4, except DSTU2 `MedicationOrder` drafts: EHRs on DSTU2 (such as the
    CDS Hooks sandbox's default server) send those, and the service must read them."""
    fixture = fixtures.load(name)
    dstu2 = [e for e in fixture.bundle["entry"] if e["resource"]["resourceType"] == "MedicationOrder"]
    assert all(e["resource"]["status"] == "draft" for e in dstu2)
    r4 = {**fixture.bundle, "entry": [e for e in fixture.bundle["entry"] if e not in dstu2]}
    bundle = Bundle.model_validate(r4)  # raises on anything not FHIR R4
    assert bundle.type == "collection"
    patients = [r for r in fixture.resources if r["resourceType"] == "Patient"]
    assert len(patients) == 1
    for resource in fixture.resources:
        subject = resource.get("subject", {}).get("reference")
        assert subject in (None, f"Patient/{fixture.patient_id}"), (resource["id"], subject)


def test_check_flags_a_wrong_expectation(monkeypatch):
    real = fixtures.expectations()
    wrong = {**real, "adult-insufficient": {**real["adult-insufficient"]}}
    wrong["adult-insufficient"]["default"] = {
        **real["adult-insufficient"]["default"],
        "vitamin-d-patient-view": ["vitd-deficiency"],
    }
    monkeypatch.setattr(fixtures, "expectations", lambda: wrong)
    results = fixture_check.run(["adult-insufficient"], ["default"])
    bad = [r for r in results if not r.ok]
    assert [(r.service, r.actual) for r in bad] == [
        ("vitamin-d-patient-view", ("vitd-insufficiency",))
    ]


def test_readme_is_generated_from_the_library():
    assert fixtures.README_FILE.read_text(encoding="utf-8") == fixtures.readme(), (
        "fixtures/README.md is out of date: run `cds-service fixtures readme --write`"
    )


def test_readme_lists_every_patient_with_its_record():
    text = fixtures.readme()
    for name in fixtures.names():
        assert f"| `{name}` |" in text
    assert "[contained Medication]" in text  # vka-atc-contained-k2-draft
    assert "(ATC B01AA04)" in text  # VKA by ATC code only
    assert "Sintrom 4 mg tablet (text only)" in text  # VKA by text only
    assert "2236-8: 18 pg/mL, final" in text  # 1,25-dihydroxy


def test_draft_orders_of_the_library_are_drafts_of_that_patient():
    drafts = fixtures.load("warfarin-d3k2-draft").drafts
    assert [d["medicationCodeableConcept"]["coding"][0]["code"] for d in drafts] == ["804617"]


def test_every_topic_fires_for_some_patient_and_not_for_others():
    """The library covers each topic of the contract both ways (under some profile)."""
    from cds_service.rules import TOPIC_IDS as TOPICS

    fired: dict[str, set[str]] = {t: set() for t in TOPICS}
    for name, entry in fixtures.expectations().items():
        for profile in ("default", "es2024"):
            for topics in entry.get(profile, {}).values():
                for topic in topics:
                    fired[topic].add(name)
    assert {t for t, who in fired.items() if not who} == set()
    assert all(len(who) < len(fixtures.names()) for who in fired.values())
