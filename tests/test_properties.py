"""Property tests (hypothesis): arbitrary JSON in prefetch, draftOrders and FHIR responses never
raises past the edge; what cannot be read is skipped and counted.

Inputs are both free-form JSON and realistic resources (tests/builders.py) with one part
replaced by arbitrary JSON, which reaches deeper into the extractors than noise does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cds_service.facts import build_facts
from cds_service.fhir_client import FetchError, FhirClient
from cds_service.gather import DataUnavailable, Gathered, GatherSettings, gather
from cds_service.registry import prefetch_keys
from cds_service.validation import validator

from .builders import (
    PATIENT_ID,
    PREFETCH_KEYS,
    condition,
    hook_request,
    medication_request,
    patient,
    searchset,
    vitamin_d,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PROPERTY = hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

FHIR_KEYS = [
    "resourceType", "id", "status", "intent", "code", "coding", "system", "value", "unit",
    "valueQuantity", "valueString", "comparator", "effectiveDateTime", "effectivePeriod", "end",
    "issued", "subject", "patient", "reference", "medicationCodeableConcept",
    "medicationReference", "dosageInstruction", "dosage", "doseAndRate", "doseQuantity",
    "timing", "repeat", "frequency", "period", "periodUnit", "count", "boundsDuration",
    "birthDate", "deceasedBoolean", "deceasedDateTime", "clinicalStatus", "verificationStatus",
    "category", "contained", "ingredient", "itemCodeableConcept", "strength", "numerator",
    "denominator", "text", "display", "entry", "resource", "fullUrl", "link", "url", "relation",
]
TYPES = [
    "Patient", "Observation", "MedicationRequest", "MedicationStatement", "MedicationOrder",
    "Medication", "Condition", "Bundle", "OperationOutcome", "ServiceRequest", "NutritionOrder",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "Patient/" + PATIENT_ID, "active", "draft", "final", "d", "wk", "[iU]", "ng/mL", "2026-10-01", "1950-06-15", "62292-8", "855332"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)
resource_like = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(TYPES)},
    optional={
        "subject": st.just({"reference": f"Patient/{PATIENT_ID}"}) | json_values,
        **{k: json_values for k in FHIR_KEYS if k not in ("resourceType", "subject")},
    },
)

REALISTIC = [
    patient(),
    patient(deceasedBoolean=True),
    vitamin_d(12.0),
    vitamin_d(40.0, "nmol/L", code="14635-7"),
    medication_request("855332", "Warfarin Sodium 5 MG Oral Tablet", dose=1, unit="{tbl}"),
    medication_request("316672", "Cholecalciferol 50000 UNT", dose=50000, per="wk"),
    condition("64859006", "Osteoporosis"),
    searchset(vitamin_d(12.0), condition("64859006", "Osteoporosis")),
]


@st.composite
def mutated(draw) -> Any:
    """A realistic resource with one node (at any depth) replaced by arbitrary JSON."""
    value = json.loads(json.dumps(draw(st.sampled_from(REALISTIC))))
    parent, key = None, None
    node = value
    for _ in range(draw(st.integers(0, 6))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1))
        else:
            break
        parent, node = node, node[key]
    replacement = draw(json_values)
    if parent is None:
        return replacement
    parent[key] = replacement
    return value


anything = json_values | resource_like | mutated()
bundles = st.builds(
    lambda entries: {"resourceType": "Bundle", "type": "searchset", "entry": entries},
    st.lists(st.one_of(st.builds(lambda r: {"resource": r}, resource_like | mutated()), json_values), max_size=6),
)
prefetch_value = st.none() | resource_like | mutated().filter(lambda v: isinstance(v, dict)) | bundles


def _request(drafts: list[Any], service: str = "vitamin-d-order-sign") -> dict:
    body = hook_request(service)
    body["context"]["draftOrders"]["entry"] = drafts
    return body


@PROPERTY
@given(
    resources=st.dictionaries(st.sampled_from(PREFETCH_KEYS), st.lists(anything, max_size=6)),
    drafts=st.lists(anything, max_size=4),
    skipped=st.integers(0, 5),
)
def test_build_facts_never_raises(resources, drafts, skipped):
    gathered = Gathered(resources=resources, fetched=(), skipped=skipped)
    entries = [{"resource": d} if i % 2 else d for i, d in enumerate(drafts)]
    facts = build_facts(_request(entries), gathered, service_id="vitamin-d-order-sign", now=NOW)
    assert facts.skipped >= skipped
    assert facts.patient is None or facts.patient.__class__.__name__ == "Patient"


@PROPERTY
@given(prefetch=st.dictionaries(st.sampled_from(PREFETCH_KEYS), prefetch_value))
def test_prefetch_is_gathered_or_reported_never_raises(prefetch):
    request = hook_request(prefetch=prefetch)  # no fhirServer: missing keys are reported
    with FhirClient(max_workers=1) as client:
        try:
            gathered = gather(request, prefetch_keys(), GatherSettings(), client)
        except DataUnavailable as exc:
            assert set(exc.missing) <= set(PREFETCH_KEYS)
            return
    build_facts(request, gathered, service_id="vitamin-d-patient-view", now=NOW)


@PROPERTY
@given(
    good=st.lists(st.sampled_from(REALISTIC[:-1]), max_size=4),
    junk=st.lists(scalars | st.lists(scalars, max_size=2) | st.just({"resource": 7}) | st.just({}), max_size=5),
    order=st.randoms(use_true_random=False),
)
def test_malformed_bundle_entries_are_skipped_and_counted(good, junk, order):
    entries = [{"resource": r} for r in good] + list(junk)
    order.shuffle(entries)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    request = hook_request(prefetch={**dict.fromkeys(PREFETCH_KEYS), "conditions": bundle})
    with FhirClient(max_workers=1) as client:
        gathered = gather(request, prefetch_keys(), GatherSettings(), client)
    assert gathered.skipped == len(junk)
    assert len(gathered.resources["conditions"]) == len(good)
    facts = build_facts(request, gathered, service_id="vitamin-d-patient-view", now=NOW)
    assert facts.skipped >= len(junk)


class ScriptedClient(FhirClient):
    """Answers every FHIR GET with generated bodies (no network): JSON, or a fetch failure."""

    def __init__(self, bodies: list[Any]) -> None:
        super().__init__(max_workers=2)
        self._bodies = bodies
        self._n = 0

    def check_server(self, base_url: str) -> None:
        return None

    def get_json(self, url, *, token, deadline, settings):
        self._n += 1
        body = self._bodies[self._n % len(self._bodies)] if self._bodies else None
        if body == "fail":
            raise FetchError("HTTP 500")
        return body


@PROPERTY
@given(bodies=st.lists(anything | bundles | st.just("fail"), min_size=1, max_size=6))
def test_fhir_responses_never_raise_past_gather(bodies):
    request = hook_request(prefetch={}, fhir_server="https://fhir.example.org/r4")
    with ScriptedClient(bodies) as client:
        try:
            gathered = gather(request, prefetch_keys(), GatherSettings(max_pages=3), client)
        except DataUnavailable as exc:
            assert set(exc.missing) <= set(PREFETCH_KEYS)
            return
    build_facts(request, gathered, service_id="vitamin-d-patient-view", now=NOW)


@pytest.fixture(scope="module")
def module_client(tmp_path_factory):
    from cds_service import Settings, create_app

    path = tmp_path_factory.mktemp("props") / "store.sqlite3"
    app = create_app(
        Settings(database_url=f"sqlite:///{path}", auth_disabled=True, validate_responses=True)
    )
    yield app.test_client()
    app.extensions["vitd.runtime"].fhir.close()
    app.extensions["vitd.runtime"].store.dispose()


@PROPERTY
@given(
    service=st.sampled_from(["vitamin-d-patient-view", "vitamin-d-order-select", "vitamin-d-order-sign"]),
    prefetch=st.fixed_dictionaries({k: prefetch_value for k in PREFETCH_KEYS}),
    drafts=st.lists(resource_like | mutated().filter(lambda v: isinstance(v, dict)), max_size=4),
)
def test_whole_call_answers_cards_or_a_clear_error(module_client, service, prefetch, drafts):
    body = hook_request(service, prefetch=prefetch)
    if service != "vitamin-d-patient-view":
        body["context"]["draftOrders"]["entry"] = [{"resource": d} for d in drafts]
    reply = module_client.post(
        f"/cds-services/{service}", data=json.dumps(body), content_type="application/json"
    )
    out = reply.get_json()
    assert reply.status_code in (200, 400, 412), out
    if reply.status_code == 200:
        assert validator("response").is_valid(out)
    else:
        assert out["error"] != "the service built an invalid response", out


def _set(resource: dict, path: tuple, value: Any) -> dict:
    out = json.loads(json.dumps(resource))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


WEEKLY_D3 = medication_request("316672", "Cholecalciferol 50000 UNT", dose=50000, per="wk")
DOSE = ("dosageInstruction", 0, "doseAndRate", 0, "doseQuantity", "value")
REPEAT = ("dosageInstruction", 0, "timing", "repeat")
HUGE = 10**400  # JSON integers are unbounded; float() of this raises OverflowError


@pytest.mark.parametrize(
    ("key", "resource"),
    [
        ("medicationRequests", _set(WEEKLY_D3, DOSE, HUGE)),
        ("medicationRequests", _set(WEEKLY_D3, (*REPEAT, "frequency"), HUGE)),
        ("medicationRequests", _set(WEEKLY_D3, (*REPEAT, "period"), HUGE)),
        ("medicationRequests", _set(WEEKLY_D3, (*REPEAT, "periodUnit"), ["wk"])),
        ("medicationRequests", _set(WEEKLY_D3, (*REPEAT, "boundsDuration"), {"value": 8, "code": {"wk": 1}})),
        ("medicationRequests", _set(WEEKLY_D3, ("dosageInstruction", 0, "timing", "code"), {"coding": [{"code": ["BID"]}]})),
        ("medicationRequests", _set(WEEKLY_D3, ("status",), ["active"])),
        ("medicationRequests", _set(WEEKLY_D3, ("resourceType",), ["MedicationRequest"])),
        ("observations", _set(vitamin_d(12.0), ("valueQuantity", "value"), HUGE)),
        ("observations", _set(vitamin_d(12.0), ("valueQuantity", "value"), "1e999")),
        ("observations", _set(vitamin_d(12.0), ("valueQuantity", "comparator"), {"<": 1})),
    ],
    ids=[
        "huge dose", "huge frequency", "huge period", "list periodUnit", "object duration code",
        "list timing code", "list status", "list resourceType", "huge level", "infinite level",
        "object comparator",
    ],
)
def test_values_that_once_raised_are_read_or_skipped(module_client, key, resource):
    """Found by the properties above; most raised TypeError or OverflowError (a 500) before."""
    prefetch = dict.fromkeys(PREFETCH_KEYS)
    prefetch[key] = searchset(resource)
    for service in ("vitamin-d-patient-view", "vitamin-d-order-sign"):
        body = hook_request(service, prefetch=prefetch, drafts=[resource] if key == "medicationRequests" else None)
        reply = module_client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")
        assert reply.status_code == 200, reply.get_json()
