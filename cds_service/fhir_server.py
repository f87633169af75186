"""A small read-only FHIR R4 server over the synthetic patients in `fixtures/patients/`.

It answers exactly what the service's prefetch templates ask (`registry.prefetch_keys()`):
`GET Patient/{id}` and the type searches by `patient` (plus `code` and `status` where the
template uses them), as `searchset` Bundles with referenced Medications `_include`d. So the
FHIR-query path (`--no-prefetch`, or an EHR sandbox pointed at it) can be tried locally.
Dates are shifted to today like every fixture load. Development only: it binds to loopback
unless told otherwise, and holds nothing but synthetic data.

For a browser app on another origin (the CDS Hooks sandbox) it also answers CORS like the
service does, lists its patients (`GET /Patient`, any search parameters but `_id` and `_count`
ignored) and takes a search as `POST /{type}/_search` with a form body, as FHIR clients try first.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.serving import WSGIRequestHandler, make_server

from . import fixtures
from .registry import prefetch_keys

FHIR_JSON = "application/fhir+json"


def _searches() -> dict[str, str]:
    """Resource type -> prefetch key, for the type searches our templates use."""
    out = {}
    for key in prefetch_keys():
        path = urlsplit(key.template).path
        if "/" not in path:
            out[path] = key.key
    return out


@cache
def _patients() -> dict[str, str]:
    """Patient id -> fixture name."""
    return {fixtures.load(name).patient_id: name for name in fixtures.names()}


def _outcome(status: int, code: str, text: str) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = FHIR_JSON
    return response


def _fhir(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.mimetype = FHIR_JSON
    return response


def _tokens(raw: str) -> list[tuple[str | None, str]]:
    out = []
    for token in raw.split(","):
        system, bar, code = token.partition("|")
        out.append((system or None, code) if bar else (None, token))
    return out


def _has_code(resource: dict[str, Any], wanted: list[tuple[str | None, str]]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(
        c.get("code") == code and (system is None or c.get("system") == system)
        for c in codings
        for system, code in wanted
    )


def _filter(bundle: dict[str, Any], args) -> dict[str, Any]:
    entries = bundle.get("entry", [])
    if "code" in args:
        wanted = _tokens(args["code"])
        entries = [e for e in entries if _has_code(e["resource"], wanted)]
    if "status" in args:
        statuses = set(args["status"].split(","))
        entries = [
            e
            for e in entries
            if e["resource"]["resourceType"] == "Medication"
            or e["resource"].get("status") in statuses
        ]
    matches = [e for e in entries if e["resource"]["resourceType"] != "Medication"]
    included = [
        {**e, "search": {"mode": "include"}}
        for e in entries
        if e["resource"]["resourceType"] == "Medication"
    ]
    out = fixtures.searchset([e["resource"] for e in matches])
    if included:
        out.setdefault("entry", []).extend(included)
    return out


def _patient_list(args) -> dict[str, Any]:
    """Every fixture Patient (or those of `_id`), as a searchset, at most `_count` of them."""
    wanted = set(",".join(args.getlist("_id")).split(",")) - {""} if "_id" in args else None
    found = [
        fixtures.load(name).search("patient")
        for pid, name in sorted(_patients().items())
        if wanted is None or pid in wanted
    ]
    count = args.get("_count", "")
    total = len(found)
    out = fixtures.searchset(found[: int(count)] if count.isdigit() else found)
    out["total"] = total
    return out


def create_fhir_app() -> Flask:
    app = Flask(__name__)
    searches = _searches()

    @app.after_request
    def cors(response: Response) -> Response:
        """Any origin may read: the server holds synthetic data only, and no credentials."""
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "Access-Control-Request-Headers", "Authorization, Content-Type, Accept"
        )
        response.headers["Access-Control-Max-Age"] = "86400"
        return response

    @app.route("/<path:_any>", methods=["OPTIONS"])
    def preflight(_any: str):
        return Response(status=204)

    @app.get("/metadata")
    def metadata():
        return _fhir(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "date": "2026-01-01",
                "rest": [
                    {
                        "mode": "server",
                        "resource": [
                            {
                                "type": "Patient",
                                "interaction": [{"code": "read"}, {"code": "search-type"}],
                            },
                            *(
                                {"type": t, "interaction": [{"code": "search-type"}]}
                                for t in searches
                            ),
                        ],
                    }
                ],
            }
        )

    @app.get("/Patient/<patient_id>")
    def read_patient(patient_id: str):
        name = _patients().get(patient_id)
        if name is None:
            return _outcome(404, "not-found", f"no Patient/{patient_id}")
        return _fhir(fixtures.load(name).search("patient"))

    @app.get("/<resource_type>")
    def search(resource_type: str):
        return _search(resource_type, request.args)

    @app.post("/<resource_type>/_search")
    def post_search(resource_type: str):
        args = MultiDict(request.args)
        args.update(request.form)
        return _search(resource_type, args)

    def _search(resource_type: str, args) -> Response:
        if resource_type == "Patient":
            return _fhir(_patient_list(args))
        key = searches.get(resource_type)
        if key is None:
            return _outcome(404, "not-supported", f"{resource_type} search is not offered")
        patient = args.get("patient", "").removeprefix("Patient/")
        if not patient:
            return _outcome(400, "required", "the patient parameter is required")
        name = _patients().get(patient)
        if name is None:
            return _fhir(fixtures.searchset([]))
        return _fhir(_filter(fixtures.load(name).search(key), args))

    @app.errorhandler(404)
    def not_found(_exc):
        return _outcome(404, "not-found", "unknown path")

    @app.errorhandler(405)
    def not_allowed(_exc):
        return _outcome(405, "not-supported", "read-only server: GET, and POST for _search, only")

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:
        """No access log: the in-process server must not print over the CLI's output."""


class FixtureFhirServer:
    """The fixture FHIR server on a background thread: `with FixtureFhirServer() as url:`.
    `access_log=True` (for `cds-service fixtures serve`) prints each request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False) -> None:
        handler = WSGIRequestHandler if access_log else _QuietHandler
        self._server = make_server(
            host, port, create_fhir_app(), threaded=True, request_handler=handler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.server_port}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def serve_forever(self) -> None:
        self._server.serve_forever()
