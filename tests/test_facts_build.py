"""build_facts: INR results and past medication uses become facts beside the current ones."""

from __future__ import annotations

from datetime import UTC, datetime

from cds_service.facts import build_facts
from cds_service.gather import Gathered

from .builders import LOINC, PATIENT_ID, hook_request, medication_request, vitamin_d

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def inr(value: float, oid: str, pid: str = PATIENT_ID) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6301-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-10-01",
        "valueQuantity": {"value": value},
    }


def facts_of(observations=(), requests=()):
    gathered = Gathered(
        resources={"observations": list(observations), "medicationRequests": list(requests)},
        fetched=(),
        skipped=0,
    )
    return build_facts(hook_request(), gathered, service_id="vitamin-d-patient-view", now=NOW)


def test_inr_results_of_this_patient_only():
    facts = facts_of([inr(2.4, "i1"), inr(9.9, "other", pid="someone-else"), vitamin_d(25)])
    assert [(lvl.observation_id, lvl.ratio) for lvl in facts.inr_levels] == [("i1", 2.4)]
    assert [lvl.observation_id for lvl in facts.vitamin_d_levels] == ["vd1"]
    assert facts.skipped == 1


def test_past_uses_are_kept_apart_from_current_ones_and_counted_once():
    requests = [
        medication_request("x", "Vitamin D3 1000 UNT", mid="now", status="active"),
        medication_request("x", "Vitamin D3 50000 UNT", mid="done", status="completed"),
        medication_request("x", "Vitamin D3 50000 UNT", mid="stop", status="stopped"),
        medication_request("x", "Vitamin D3 50000 UNT", mid="err", status="entered-in-error"),
        medication_request("x", "Vitamin D3 400 UNT", mid="theirs", pid="someone-else"),
    ]
    facts = facts_of(requests=requests)
    assert [m.id for m in facts.medications] == ["now"]
    assert [m.id for m in facts.past_medications] == ["done", "stop"]
    assert facts.skipped == 1  # the other patient's order, once
