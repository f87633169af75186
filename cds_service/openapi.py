"""The OpenAPI 3.1 document of the service (`GET /openapi.json`), built from what runs.

Paths come from the registry; request, feedback and response bodies are the very JSON Schemas
the edge validates with (`schemas/*.schema.json`), embedded with their `$defs` moved into
`components.schemas` (so `#/$defs/x` becomes `#/components/schemas/<Name>_x`). Nothing here is a
hand-written copy of those schemas, so the document cannot drift from the checks.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from .registry import SERVICES

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "minLength": 1},
        "details": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

DISCOVERY = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["hook", "id", "description"],
                "properties": {
                    "hook": {"type": "string"},
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        }
    },
}

FEEDBACK_RECEIPT = {
    "type": "object",
    "required": ["received", "stored"],
    "properties": {
        "received": {"type": "integer", "minimum": 1},
        "stored": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}

ERROR_REF = {"$ref": "#/components/schemas/Error"}
DISCOVERY_REF = {"$ref": "#/components/schemas/Discovery"}

STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}


def _load(name: str) -> dict:
    text = resources.files(__package__).joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = f"#/components/schemas/{prefix}_{value[len('#/$defs/') :]}"
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node


def _embed(name: str, prefix: str, components: dict) -> dict:
    """`schemas/<name>.schema.json` as component `prefix`, its $defs as `prefix_<def>`."""
    schema = _rewrite_refs(copy.deepcopy(_load(name)), prefix)
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    for def_name, definition in schema.pop("$defs", {}).items():
        components[f"{prefix}_{def_name}"] = definition
    components[prefix] = schema
    return {"$ref": f"#/components/schemas/{prefix}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    texts = {
        400: "malformed JSON, schema-invalid, a refused fhirServer, or a limit exceeded",
        401: "no valid JWT (the reason is logged, not returned)",
        412: "required data could be had neither from prefetch nor from fhirServer",
        413: "body larger than CDS_MAX_BODY_BYTES",
        415: "not application/json",
        503: "store or replay store unavailable; retry later",
    }
    return {str(c): {"description": texts[c], **_json(ERROR_REF)} for c in codes}


@cache
def document() -> dict:
    components: dict[str, Any] = {
        "Error": ERROR,
        "Discovery": DISCOVERY,
        "FeedbackReceipt": FEEDBACK_RECEIPT,
        "Status": STATUS,
    }
    request = _embed("request", "Request", components)
    response = _embed("response", "Response", components)
    feedback = _embed("feedback", "Feedback", components)
    secured = [{"cdsHooksJwt": []}]
    paths: dict[str, Any] = {
        "/cds-services": {
            "get": {
                "operationId": "discovery",
                "summary": "The services offered (public)",
                "security": [],
                "responses": {"200": {"description": "services", **_json(DISCOVERY_REF)}},
            }
        },
        "/healthz": _status_path("healthz", "process up", with_503=False),
        "/readyz": _status_path("readyz", "store reachable", with_503=True),
    }
    for spec in SERVICES.values():
        body = {"allOf": [request, {"properties": {"hook": {"const": spec.hook}}}]}
        paths[f"/cds-services/{spec.id}"] = {
            "post": {
                "operationId": f"call-{spec.id}",
                "summary": spec.title,
                "description": spec.description,
                "security": secured,
                "requestBody": {"required": True, **_json(body)},
                "responses": {
                    "200": {"description": "cards", **_json(response)},
                    **_errors(400, 401, 412, 413, 415, 503),
                },
            }
        }
        paths[f"/cds-services/{spec.id}/feedback"] = {
            "post": {
                "operationId": f"feedback-{spec.id}",
                "summary": f"Feedback on the cards of {spec.id}",
                "security": secured,
                "requestBody": {"required": True, **_json(feedback)},
                "responses": {
                    "200": {
                        "description": "stored (once per distinct item)",
                        **_json({"$ref": "#/components/schemas/FeedbackReceipt"}),
                    },
                    **_errors(400, 401, 413, 415, 503),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vitd-cds",
            "version": "0.1.0",
            "description": "CDS Hooks 2.0 service: vitamin D, calcium, vitamin K and VKAs.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "cdsHooksJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "CDS Hooks 2.0 JWT signed by a trusted EHR; aud = URL called",
                }
            },
        },
    }


def _status_path(name: str, what: str, *, with_503: bool) -> dict:
    status = {"$ref": "#/components/schemas/Status"}
    responses: dict[str, Any] = {"200": {"description": what, **_json(status)}}
    if with_503:
        responses["503"] = {"description": "store unreachable", **_json(ERROR_REF)}
    return {"get": {"operationId": name, "summary": what, "security": [], "responses": responses}}
