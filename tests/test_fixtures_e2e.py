"""Every fixture patient × service × gathering mode, through HTTP: exactly the expected topics.

Gathering modes (contract §2): `prefetch` (every key sent), `fhir` (no prefetch: every key is
fetched from a loopback FHIR server serving the fixture) and `outcome` (every key an
OperationOutcome, so fetched too). The answer must not depend on the mode.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cds_service import fixtures
from cds_service.guideline import PROFILES
from cds_service.registry import prefetch_keys
from tests.fhir_stub import FhirStub

EXPECTED = fixtures.expectations()
SERVICES = tuple(fixtures.HOOKS)


def _cases(profile: str) -> list[tuple[str, str]]:
    return [(name, profile) for name, entry in sorted(EXPECTED.items()) if profile in entry]


def _route(key: str, patient_id: str) -> str:
    template = next(k.template for k in prefetch_keys() if k.key == key)
    return template.split("?", 1)[0].replace("{{context.patientId}}", patient_id)


def topics(reply) -> Counter:
    assert reply.status_code == 200, reply.get_json()
    return Counter(card["source"]["topic"]["code"] for card in reply.get_json()["cards"])


def test_every_fixture_has_expectations_and_every_expectation_a_fixture():
    assert sorted(EXPECTED) == fixtures.names()
    for name, entry in EXPECTED.items():
        assert entry["about"], name
        for profile in PROFILES:
            if profile in entry:
                assert sorted(entry[profile]) == sorted(SERVICES), (name, profile)


@pytest.mark.parametrize(("name", "profile"), [c for p in PROFILES for c in _cases(p)])
def test_fixture_gets_exactly_its_topics_in_every_gathering_mode(make_app, settings, name, profile):
    client = make_app(settings.with_overrides(guideline_profile=profile)).test_client()
    fixture = fixtures.load(name)
    with FhirStub() as stub:
        for key in prefetch_keys():
            stub.add(_route(key.key, fixture.patient_id), fixture.search(key.key))
        for service in SERVICES:
            want = Counter(EXPECTED[name][profile][service])
            for mode in fixtures.MODES:
                body = fixture.request(service, mode, fhir_server=stub.base_url)
                reply = client.post(
                    f"/cds-services/{service}",
                    data=json.dumps(body),
                    content_type="application/json",
                )
                assert topics(reply) == want, (name, profile, service, mode)
        # The FHIR modes really went to the server (5 keys × 3 services × 2 modes).
        assert len(stub.requests) == len(prefetch_keys()) * len(SERVICES) * 2
