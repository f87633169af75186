"""The fixture FHIR server: the reads and searches of our prefetch templates, nothing else."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds_service import fixture_check
from cds_service.fhir_server import FixtureFhirServer, create_fhir_app
from cds_service.registry import prefetch_keys

OUR_CODES = "http://loinc.org|62292-8,http://loinc.org|1989-3,http://loinc.org|14635-7"


@pytest.fixture
def fhir():
    return create_fhir_app().test_client()


def test_reads_a_patient(fhir):
    reply = fhir.get("/Patient/adult-deficient")
    assert reply.status_code == 200 and reply.mimetype == "application/fhir+json"
    assert reply.get_json()["resourceType"] == "Patient"
    assert reply.get_json()["id"] == "adult-deficient"


def test_unknown_patient_is_a_404_outcome(fhir):
    reply = fhir.get("/Patient/nobody")
    assert reply.status_code == 404
    assert reply.get_json()["resourceType"] == "OperationOutcome"


def test_search_filters_by_code(fhir):
    everything = fhir.get("/Observation?patient=ckd-dihydroxy-only").get_json()
    ours = fhir.get(f"/Observation?patient=ckd-dihydroxy-only&code={OUR_CODES}").get_json()
    assert everything["total"] == 1  # the 1,25-dihydroxy result (2236-8)
    assert ours["total"] == 0 and "entry" not in ours
    Bundle.model_validate(everything)


def test_search_filters_by_status_and_includes_medications(fhir):
    bundle = fhir.get(
        "/MedicationRequest?patient=vka-atc-contained-k2-draft&status=active"
        "&_include=MedicationRequest:medication"
    ).get_json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset"
    statuses = [e["resource"]["status"] for e in bundle["entry"]]
    assert statuses == ["active"]  # the draft K2 is not on file


def test_search_by_patient_reference(fhir):
    bundle = fhir.get("/Condition?patient=Patient/ckd-no-level").get_json()
    assert bundle["total"] == 1


def test_search_needs_a_patient(fhir):
    reply = fhir.get("/Condition")
    assert reply.status_code == 400 and reply.get_json()["resourceType"] == "OperationOutcome"


def test_only_the_searches_of_our_templates(fhir):
    assert fhir.get("/Encounter?patient=adult-deficient").status_code == 404
    assert fhir.post("/Patient/adult-deficient").status_code == 405
    advertised = {k.template.split("?")[0] for k in prefetch_keys()}
    capability = fhir.get("/metadata").get_json()
    types = {r["type"] for r in capability["rest"][0]["resource"]}
    assert types == {t.split("/")[0] for t in advertised}


def test_the_service_gets_the_same_answers_from_it_as_from_prefetch():
    """Every fixture × service × profile, with no prefetch at all: every key is fetched from
    the fixture FHIR server (over HTTP on loopback), and the topics are the prefetch ones."""
    with_prefetch = {(r.patient, r.profile, r.service): r.actual for r in fixture_check.run()}
    with FixtureFhirServer() as url:
        results = fixture_check.run(mode="fhir", fhir_server=url)
    assert len(results) == len(with_prefetch) >= 90
    for r in results:
        assert r.error is None, (r.patient, r.service, r.error)
        assert r.actual == with_prefetch[(r.patient, r.profile, r.service)], r
