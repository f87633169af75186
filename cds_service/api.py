"""HTTP edge: the only module that touches `flask.request`.

It checks (auth, media type, size, JSON, schema, hook), delegates to `engine`, and maps errors
to JSON by type. Errors are `{"error": ..., "details": [...]}`, never a stack trace.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import arrival, engine, ids, limits, metrics, openapi, profiles
from .auth import Authenticator, AuthRejected, Caller
from .config import Settings
from .errors import ApiError, BadRequest, NotFound, ServiceBusy, UnsupportedMediaType
from .registry import SERVICES, ServiceSpec, discovery_document
from .store import describe_error
from .validation import check, parse_json

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RETRY_AFTER_S = 2  # told to callers refused because a store is away (503)
CORS_PREFIX = "/cds-services"
CORS_HEADERS = "vitd.cors_headers"  # app.extensions key: the CORS headers, made once per app


def _settings() -> Settings:
    return current_app.extensions["vitd.settings"]


def _runtime() -> engine.Runtime:
    return current_app.extensions["vitd.runtime"]


def _authenticator() -> Authenticator:
    return current_app.extensions["vitd.auth"]


def _caller() -> Caller:
    """The JWT check (auth.py); `aud` must be the public URL of the endpoint called."""
    auth = _authenticator()
    # The request's own base only when no public base URL is configured: building it
    # (`request.url_root`) is a few microseconds otherwise spent for nothing.
    base = "" if auth.public_base_urls else request.url_root
    try:
        return auth.authenticate(
            request.headers.get("Authorization"), auth.audience(base, request.path)
        )
    except AuthRejected as exc:
        g.auth_rejection = str(exc.reason)
        raise


def _service(service_id: str) -> ServiceSpec:
    spec = SERVICES.get(service_id)
    if spec is None:
        raise NotFound("unknown service", [f"see GET {CORS_PREFIX} for the services offered"])
    return spec


def _json_body() -> Any:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType()
    raw = limits.read_body(request, _settings().max_body_bytes)  # 413 chunked or not
    limits.check_depth(raw, _settings().max_json_depth)  # before the parser sees it
    return parse_json(raw)


def _checked(service_id: str, schema: str, error: str) -> tuple[ServiceSpec, Any, Caller]:
    """The edge checks every call shares, in order: service, caller, media type, JSON (and its
    depth), schema."""
    spec = _service(service_id)
    g.service_id = spec.id
    caller = _caller()
    body = _json_body()
    check(schema, body, error)
    return spec, body, caller


@bp.get("/cds-services")
def discovery():
    return jsonify(discovery_document(_settings().guideline_profile))


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    spec, body, caller = _checked(service_id, "request", "invalid CDS Hooks request")
    if body["hook"] != spec.hook:
        raise BadRequest("hook does not match the service", [f"{spec.id} answers {spec.hook}"])
    settings = _settings()
    limits.check_request(
        body,
        max_draft_orders=settings.max_draft_orders,
        max_prefetch_entries=settings.max_prefetch_entries,
    )
    if time.monotonic() - g.arrived > settings.fhir_budget_s:  # queued past its budget
        raise ServiceBusy(details=["the call waited past its time budget; nothing was done"])
    runtime = _runtime()
    client = runtime.clients.for_caller(caller.issuer, caller.tenant)
    outcome = engine.respond(
        spec,
        body,
        runtime,
        runtime.clock(),
        tenant=caller.tenant,
        arrived=g.arrived,
        client=client,
    )
    g.card_count = len(outcome.response["cards"])
    g.card_topics = _topics(outcome.response["cards"])
    metrics.cards_returned(spec.id, outcome.response["cards"])
    metrics.cards_withheld(spec.id, outcome.withheld)
    if _settings().validate_responses:
        check("response", outcome.response, "the service built an invalid response")
    return jsonify(outcome.response)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    spec, body, _caller_ = _checked(service_id, "feedback", "invalid feedback")
    runtime = _runtime()
    received_at = runtime.clock()
    try:
        outcomes = runtime.store.save_feedback_outcomes(
            spec.id, body["feedback"], received_at=received_at
        )
        if spec.hook == "patient-view":
            runtime.store.snooze_from_feedback(
                spec.id,
                body["feedback"],
                received_at=received_at,
                days=profiles.snooze_days(runtime.snooze_days),
                never=profiles.never_snoozed,
            )
    except Exception as exc:  # StoreUnavailable (no answer in time) or the driver's error
        log.warning("could not store feedback", extra={"cause": describe_error(exc)})
        return _error(
            503,
            {"error": "feedback store unavailable, retry later"},
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    metrics.feedback_stored(spec.id, outcomes)
    return jsonify({"received": len(body["feedback"]), "stored": len(outcomes)})


def _topics(cards: list[dict]) -> dict[str, int]:
    """Cards per topic code, for the request log (topics are ours: no patient data)."""
    counts: dict[str, int] = {}
    for card in cards:
        source = card.get("source") if isinstance(card, dict) else None
        topic = source.get("topic") if isinstance(source, dict) else None
        code = topic.get("code") if isinstance(topic, dict) else None
        key = code if isinstance(code, str) else "(none)"
        counts[key] = counts.get(key, 0) + 1
    return counts


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.document())


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """From the background check (readiness.py): answers at once whatever the stores do."""
    ready, failing = current_app.extensions["vitd.readiness"].state()
    if ready:
        return jsonify({"status": "ready"})
    return _error(
        503,
        {"error": "store unreachable", "details": list(failing)},
        {"Retry-After": str(RETRY_AFTER_S)},
    )


def _error(status: int, body: dict, headers: dict | None = None):
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _on_api_error(exc: ApiError):
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
    return _error(exc.status, exc.body(), headers)


def _on_http_error(exc: HTTPException):
    headers = {}
    if exc.code == 405 and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    details = [f"at most {_settings().max_body_bytes} bytes"] if exc.code == 413 else []
    body = {"error": (exc.name or "error").lower()}
    if details:
        body["details"] = details
    return _error(exc.code or 500, body, headers)


def _on_unexpected(exc: Exception):
    # The exception's message may quote input; log its type and where it happened only.
    log.error(
        "unhandled %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__))
    )
    return _error(500, {"error": "internal error", "details": [f"request id {g.request_id}"]})


def _before():
    g.started = time.perf_counter()
    g.arrived = arrival.arrived() or time.monotonic()  # the call's budget counts from here
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID.match(incoming) else ids.uuid4_hex()


def _cors_headers(origin: str) -> list[tuple[str, str]]:
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
        ("Access-Control-Expose-Headers", "X-Request-ID"),
        ("Access-Control-Max-Age", "86400"),
    ]


def _after(response):
    headers = response.headers
    headers["X-Request-ID"] = g.get("request_id", "")
    if request.path.startswith(CORS_PREFIX):
        # Added at once (no view sets these): setting each looks for an earlier one first.
        origin = _settings().cors_origin
        headers.extend(current_app.extensions[CORS_HEADERS])
        if origin != "*":
            headers["Vary"] = "Origin"
    # Route pattern and service id only: paths and bodies may carry patient data.
    log.info(
        "request",
        extra={
            "request_id": g.get("request_id"),
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule else None,
            "service": g.get("service_id"),
            "status": response.status_code,
            "latency_ms": round(
                (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1
            ),
            "cards": g.get("card_count"),
            "cards_by_topic": g.get("card_topics") or None,
            "auth_rejection": g.get("auth_rejection"),
        },
    )
    return response


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(Exception, _on_unexpected)
    app.extensions[CORS_HEADERS] = _cors_headers(app.extensions["vitd.settings"].cors_origin)
    app.before_request(_before)
    app.after_request(_after)
