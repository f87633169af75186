"""Prometheus metrics (`GET /metrics`, text format), one `Metrics` object per app.

Names (all `vitd_cds_*`; see the README's Metrics table):

- `vitd_cds_http_requests_total{route,service,status}` and
  `vitd_cds_http_request_duration_seconds{route,service,status}`: every HTTP request, by route
  pattern (never the raw path), service id (`none` outside the service routes) and status.
- `vitd_cds_cards_total{service,topic,indicator}`: cards returned.
- `vitd_cds_cards_withheld_total{service,topic,reason}`: cards evaluated and recorded but not
  returned: `silent` (shadow mode), `suppressed` (snoozed), `deduplicated` (order-sign).
- `vitd_cds_feedback_total{service,topic,outcome}`: feedback items newly stored, by the topic
  of the card they answer (`unknown` when the card was not issued by this service's store).
- `vitd_cds_fhir_request_duration_seconds{result}` and `vitd_cds_fhir_errors_total{reason}`:
  every outbound FHIR GET (`result` is `ok` or `error`).
- `vitd_cds_jwt_rejections_total{reason}`: calls refused by authentication.
- `vitd_cds_issued_cards_queued{store}` (gauge, summed over live workers) and
  `vitd_cds_issued_cards_dropped_total{store}`: issued-card records waiting for the database,
  and those dropped because the bounded queue was full (`store` is `database`).

Labels only ever hold bounded, non-patient values. Under gunicorn the workers write to
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode, which `cds-service serve`
sets up) and a scrape of any worker aggregates them all; without it the app's own registry
is exposed (tests, `cds-service invoke`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from flask import Flask, Response, current_app, g, has_app_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .registry import SERVICES

PREFIX = "vitd_cds"
EXTENSION = "vitd.metrics"
NO_SERVICE = "none"
UNKNOWN_TOPIC = "unknown"

# CDS Hooks calls must answer well within 500 ms; the fine buckets sit around our 25 ms goal.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FHIR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_LABEL_SAFE = re.compile(r"[^a-z0-9_-]+")
# Labelled children (and slugged label values) kept per metric. The values come from fixed sets
# (routes, service ids, statuses, topic codes, reasons), a few dozen in all; the bound only
# stops odd input from growing the caches: past it, lookups go to `.labels()` as before.
MAX_CACHED_CHILDREN = 256


def _label(value: Any, default: str) -> str:
    """A short label value: lower-case letters, digits, `_` and `-` only, at most 64 characters."""
    if not isinstance(value, str) or not value:
        return default
    return _slug(value) or default


@lru_cache(maxsize=MAX_CACHED_CHILDREN)
def _slug(value: str) -> str:
    return _LABEL_SAFE.sub("_", value.strip().lower()).strip("_")[:64]


class _Children:
    """`metric.labels(*values)`, remembered: `.labels()` makes a tuple of `str()`s and takes a
    lock on every call, a dict lookup here does not. Children are the metric's own (the same
    objects `.labels()` returns), so values and the exposition are unchanged."""

    __slots__ = ("_metric", "_cache")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple, Any] = {}

    def __call__(self, *values: Any) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._metric.labels(*values)
            if len(self._cache) < MAX_CACHED_CHILDREN:
                self._cache[values] = child
        return child


def fhir_error_reason(reason: str) -> str:
    """`FetchError.reason` as a label: `HTTP 503` becomes `http_5xx`, others are slugged."""
    match = re.fullmatch(r"HTTP (\d)\d\d", reason)
    if match:
        return f"http_{match.group(1)}xx"
    return _label(reason, "other")


class Metrics:
    def __init__(self, multiproc_dir: str | None = None) -> None:
        if multiproc_dir and values.ValueClass.__name__ != "MmapedValue":
            # The workers would count in memory and each scrape would see one worker only.
            raise RuntimeError(
                "prometheus-client was imported before PROMETHEUS_MULTIPROC_DIR was set"
            )
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route pattern, service id and status.",
            ["route", "service", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request, by route pattern, service id and status.",
            ["route", "service", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.cards = Counter(
            f"{PREFIX}_cards",
            "CDS cards returned, by service, topic and indicator.",
            ["service", "topic", "indicator"],
            registry=r,
        )
        self.withheld = Counter(
            f"{PREFIX}_cards_withheld",
            "Cards evaluated and recorded but not returned, by service, topic and reason "
            "(silent: shadow mode; suppressed: snoozed by feedback; deduplicated: shown at "
            "order-select).",
            ["service", "topic", "reason"],
            registry=r,
        )
        self.feedback = Counter(
            f"{PREFIX}_feedback",
            "Feedback items stored (repeats not counted), by service, card topic and outcome.",
            ["service", "topic", "outcome"],
            registry=r,
        )
        self.fhir_seconds = Histogram(
            f"{PREFIX}_fhir_request_duration_seconds",
            "Outbound FHIR GETs (each page counts), by result (ok or error).",
            ["result"],
            buckets=FHIR_BUCKETS,
            registry=r,
        )
        self.fhir_errors = Counter(
            f"{PREFIX}_fhir_errors",
            "Outbound FHIR GETs that gave no usable data, by reason.",
            ["reason"],
            registry=r,
        )
        self.jwt_rejections = Counter(
            f"{PREFIX}_jwt_rejections",
            "Service and feedback calls refused by authentication, by reason.",
            ["reason"],
            registry=r,
        )

        self.cards_queued = Gauge(
            f"{PREFIX}_issued_cards_queued",
            "Issued-card records waiting in memory to be written to the database.",
            ["store"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cards_dropped = Counter(
            f"{PREFIX}_issued_cards_dropped",
            "Issued-card records dropped because the queue for the database was full.",
            ["store"],
            registry=r,
        )
        self._requests = _Children(self.requests)
        self._request_seconds = _Children(self.request_seconds)
        self._cards = _Children(self.cards)
        self._withheld = _Children(self.withheld)
        self._feedback = _Children(self.feedback)
        self._fhir_seconds = _Children(self.fhir_seconds)
        self._fhir_errors = _Children(self.fhir_errors)
        self._jwt_rejections = _Children(self.jwt_rejections)
        self._cards_queued = _Children(self.cards_queued)
        self._cards_dropped = _Children(self.cards_dropped)

    # recording ---------------------------------------------------------------------------

    def observe_card_queue(self, queued: int, dropped: int) -> None:
        """Called by the store's card recorder after every write attempt."""
        self._cards_queued("database").set(queued)
        if dropped:
            self._cards_dropped("database").inc(dropped)

    def observe_request(self, route: str, service: str, status: int, seconds: float) -> None:
        self._requests(route, service, status).inc()
        self._request_seconds(route, service, status).observe(seconds)

    def observe_cards(self, service: str, cards: Iterable[Mapping[str, Any]]) -> None:
        for card in cards:
            topic = (card.get("source") or {}).get("topic") or {}
            self._cards(
                service,
                _label(topic.get("code"), UNKNOWN_TOPIC),
                _label(card.get("indicator"), "unknown"),
            ).inc()

    def observe_withheld(self, service: str, withheld: Iterable[tuple[str, str]]) -> None:
        for topic, reason in withheld:
            self._withheld(service, _label(topic, UNKNOWN_TOPIC), _label(reason, "unknown")).inc()

    def observe_feedback(self, service: str, outcomes: Iterable[tuple[str | None, str]]) -> None:
        """`outcomes`: (topic or None, outcome) for each newly stored feedback item."""
        for topic, outcome in outcomes:
            self._feedback(service, _label(topic, UNKNOWN_TOPIC), _label(outcome, "unknown")).inc()

    def observe_fhir(self, seconds: float, error: str | None) -> None:
        """Called by `FhirClient` for every GET, from its worker threads."""
        self._fhir_seconds("ok" if error is None else "error").observe(seconds)
        if error is not None:
            self._fhir_errors(fhir_error_reason(error)).inc()

    # exposition --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        if self.multiproc_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiproc_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _current() -> Metrics | None:
    if not has_app_context():
        return None
    return current_app.extensions.get(EXTENSION)


def jwt_rejected(reason: str) -> None:
    """Count one call refused by authentication (`reason`: a short fixed word, no token data)."""
    metrics = _current()
    if metrics is not None:
        metrics._jwt_rejections(_label(reason, "other")).inc()


def cards_returned(service: str, cards: Iterable[Mapping[str, Any]]) -> None:
    metrics = _current()
    if metrics is not None:
        metrics.observe_cards(service, cards)


def cards_withheld(service: str, withheld: Iterable[tuple[str, str]]) -> None:
    metrics = _current()
    if metrics is not None:
        metrics.observe_withheld(service, withheld)


def feedback_stored(service: str, outcomes: Iterable[tuple[str | None, str]]) -> None:
    metrics = _current()
    if metrics is not None:
        metrics.observe_feedback(service, outcomes)


def _service_label(view_args: Mapping[str, Any] | None) -> str:
    """The service id of a service or feedback route, if it names one we offer."""
    service_id = (view_args or {}).get("service_id")
    return service_id if service_id in SERVICES else NO_SERVICE


def install(app: Flask, metrics: Metrics) -> None:
    """Serve `GET /metrics` and time every request of `app`."""
    app.extensions[EXTENSION] = metrics

    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    def observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            service = _service_label(request.view_args)
            metrics.observe_request(
                route, service, response.status_code, time.perf_counter() - started
            )
        return response

    def scrape() -> Response:
        return Response(metrics.exposition(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    app.before_request(start_timer)
    app.after_request(observe)
    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
