"""What the public CDS Hooks sandbox sends (../shared/reference/cds-hooks.md §6), replayed for
every fixture patient: near-R4 drafts (`category` and `reasonCode` single objects), a
draftOrders Bundle with no `type`, `userId` Practitioner/COREPRACTITIONER1, no
`fhirAuthorization`, and only the prefetch it could resolve (failed keys left out, so fetched
from `fhirServer` with no token). The cards must be the ones expected.json names."""

from __future__ import annotations

import copy

import pytest

from cds_service import fixtures
from cds_service.fhir_server import FixtureFhirServer

EXPECTED = fixtures.expectations()
ORDER_HOOKS = ("vitamin-d-order-select", "vitamin-d-order-sign")


def sandbox_shaped(body: dict, fhir_server: str) -> dict:
    out = copy.deepcopy(body)
    out["fhirServer"] = fhir_server
    out.pop("fhirAuthorization", None)
    out["context"]["userId"] = "Practitioner/COREPRACTITIONER1"
    # the sandbox could not resolve these keys: it leaves them out, never null
    for key in ("medicationStatements", "conditions"):
        out["prefetch"].pop(key)
    orders = out["context"].get("draftOrders")
    if orders is not None:
        orders.pop("type")
        for entry in orders.get("entry", []):
            draft = entry["resource"]
            draft["category"] = {"coding": [{"code": "outpatient"}]}
            draft["reasonCode"] = {"coding": [{"code": "34713006"}]}
            dosage = draft.get("dosageInstruction", [{}])[0]
            if isinstance(dosage.get("doseAndRate"), list):
                dosage["doseAndRate"] = dosage["doseAndRate"][0]  # one object, not a list
    return out


@pytest.fixture(scope="module")
def fhir_url():
    with FixtureFhirServer() as url:
        yield url


@pytest.mark.parametrize("name", fixtures.names())
def test_sandbox_shaped_requests_get_the_expected_cards(client, fhir_url, name):
    fixture = fixtures.load(name)
    for service in fixtures.HOOKS:
        want = EXPECTED[name]["default"][service]
        body = sandbox_shaped(fixture.request(service), fhir_url)
        reply = client.post(f"/cds-services/{service}", json=body)
        assert reply.status_code == 200, reply.get_json()
        got = [c["source"]["topic"]["code"] for c in reply.get_json()["cards"]]
        assert sorted(got) == sorted(want), (name, service)


def test_the_replay_really_is_near_r4_and_fetches(fhir_url):
    body = sandbox_shaped(
        fixtures.load("adult-deficient").request("vitamin-d-order-sign"), fhir_url
    )
    orders = body["context"]["draftOrders"]
    assert "type" not in orders and "fhirAuthorization" not in body
    assert isinstance(orders["entry"][0]["resource"]["category"], dict)
    assert set(body["prefetch"]) == {"patient", "observations", "medicationRequests"}
