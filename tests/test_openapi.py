"""The OpenAPI 3.1 document and schemathesis against the in-process app (WSGI, no network).

schemathesis generates requests from `GET /openapi.json` (bounded: `MAX_EXAMPLES` per
operation) and checks that no answer is a 5xx, every status is documented, and every body
matches its documented schema. The app runs with JWT on (each case gets a fresh token), and
with an allowlist that no generated fhirServer can match, and a resolver that resolves
nothing, so no generated URL is ever contacted or looked up.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service import openapi, ssrf
from cds_service.registry import SERVICES
from cds_service.validation import validator

from .builders import hook_request, null_prefetch
from .jwt_helpers import PUBLIC_BASE, signer

MAX_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_document_is_openapi_31_and_lists_every_endpoint(client):
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    doc = reply.get_json()
    assert doc["openapi"] == "3.1.0"
    expected = {"/cds-services", "/healthz", "/readyz"}
    for service_id in SERVICES:
        expected |= {f"/cds-services/{service_id}", f"/cds-services/{service_id}/feedback"}
    assert set(doc["paths"]) == expected
    assert doc["paths"]["/cds-services"]["get"]["security"] == []
    post = doc["paths"]["/cds-services/vitamin-d-order-sign"]["post"]
    assert post["security"] == [{"cdsHooksJwt": []}]
    assert {"200", "400", "401", "412", "413", "415"} <= set(post["responses"])


def test_served_document_is_the_module_document(client):
    assert client.get("/openapi.json").get_json() == json.loads(json.dumps(openapi.document()))


def test_bodies_are_the_schemas_the_edge_validates_with(client):
    """The document's request/feedback/response components accept and refuse as the edge does."""
    doc = client.get("/openapi.json").get_json()
    components = doc["components"]["schemas"]

    def component(name):
        return Draft202012Validator({"$ref": f"#/components/schemas/{name}", **doc})

    good = hook_request(prefetch=null_prefetch())
    bad = dict(good, context={"patientId": "Patient/1"})
    for name, samples in {
        "Request": [good, bad, {}, {"hook": "x", "hookInstance": "y", "context": []}],
        "Feedback": [{"feedback": []}, {"feedback": [{"card": "c", "outcome": "accepted"}]}],
        "Response": [{"cards": []}, {"cards": [{"summary": "x"}]}],
    }.items():
        assert name in components
        for sample in samples:
            assert component(name).is_valid(sample) == validator(name.lower()).is_valid(sample)


@pytest.fixture
def fuzz_app(make_app, auth_settings, monkeypatch):
    # Resolves nothing, and the allowlist matches no generated URL: nothing is contacted.
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: [])
    return make_app(auth_settings.with_overrides(fhir_allowlist=("http://127.0.0.1:1/unused/",)))


# The document the app serves (test_served_document_is_the_module_document checks they agree).
# Loaded from the dict rather than through schemathesis' lazy fixture loader, which does not
# work with pytest 9.2 (it sets the removed `Node._nodeid`).
schema = schemathesis.openapi.from_dict(openapi.document())


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_fuzz(case, fuzz_app):
    token = signer().sign(aud=PUBLIC_BASE + case.formatted_path)
    case.call_and_validate(
        app=fuzz_app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
