"""`GET /metrics`: a scenario is driven through the app, then the scrape is checked number by number."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cds_service import engine
from cds_service import metrics as metrics_module
from cds_service.metrics import Metrics, fhir_error_reason
from tests.fhir_stub import FhirStub, Reply, searchset

from .builders import PATIENT_ID, full_record, hook_request, medication_request, patient

TOPIC = "urn:vitd-cds:topic"


def _card(topic: str, indicator: str) -> dict:
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": f"test card for {topic}",
        "detail": "Test detail.",
        "indicator": indicator,
        "source": {
            "label": "Test guideline",
            "url": "https://example.org/guideline",
            "topic": {"system": TOPIC, "code": topic, "display": topic},
        },
    }
    if indicator != "info":
        card["overrideReasons"] = [
            {"system": "urn:vitd-cds:override", "code": "other", "display": "Other"}
        ]
    return card


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from one scrape."""
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.content_type.startswith("text/plain; version=")
    return scrape_text(reply.get_data(as_text=True))


def scrape_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """Sum of `name` over every sample whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.fixture
def issued(monkeypatch):
    """Every call returns a warning `vitd-deficiency` and an info `k2-consideration` card."""
    cards: list[dict] = []

    def fake_cards_for(*_args, **_kwargs):
        new = [_card("vitd-deficiency", "warning"), _card("k2-consideration", "info")]
        cards.extend(new)
        return new

    monkeypatch.setattr(engine, "cards_for", fake_cards_for)
    return cards


def test_scenario_counts_requests_cards_and_feedback(client, issued):
    service = "vitamin-d-order-sign"
    draft = medication_request("2418", "Cholecalciferol 1000 IU oral tablet", mid="d1")
    for _ in range(3):
        body = hook_request(service, prefetch=full_record(), drafts=[draft])
        assert client.post(f"/cds-services/{service}", json=body).status_code == 200
    assert client.get("/cds-services").status_code == 200
    assert client.post("/cds-services/no-such-service", json={}).status_code == 404
    assert client.post(f"/cds-services/{service}", json={"hook": "order-sign"}).status_code == 400

    deficiency = [c for c in issued if c["source"]["topic"]["code"] == "vitd-deficiency"]
    k2 = [c for c in issued if c["source"]["topic"]["code"] == "k2-consideration"]
    feedback = [
        {"card": deficiency[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-25T10:00:00Z",
         "acceptedSuggestions": [{"id": str(uuid.uuid4())}]},
        {"card": deficiency[1]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:01Z"},
        {"card": k2[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:02Z"},
        {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-25T10:00:03Z",
         "acceptedSuggestions": [{"id": str(uuid.uuid4())}]},
    ]
    reply = client.post(f"/cds-services/{service}/feedback", json={"feedback": feedback})
    assert reply.get_json() == {"received": 4, "stored": 4}
    # The same items again: stored once, so counted once.
    reply = client.post(f"/cds-services/{service}/feedback", json={"feedback": feedback[:2]})
    assert reply.get_json() == {"received": 2, "stored": 0}

    m = scrape(client)
    route = "/cds-services/<service_id>"
    req = "vitd_cds_http_requests_total"
    assert value(m, req, route=route, service=service, status="200") == 3
    assert value(m, req, route=route, service="none", status="404") == 1
    assert value(m, req, route=route, service=service, status="400") == 1
    assert value(m, req, route="/cds-services", service="none", status="200") == 1
    assert value(m, req, route=route + "/feedback", service=service, status="200") == 2
    assert total(m, req) == 8  # the scrape itself is counted after it is answered
    hist = "vitd_cds_http_request_duration_seconds"
    assert value(m, f"{hist}_count", route=route, service=service, status="200") == 3
    assert value(m, f"{hist}_bucket", route=route, service=service, status="200", le="+Inf") == 3
    assert value(m, f"{hist}_sum", route=route, service=service, status="200") > 0

    cards = "vitd_cds_cards_total"
    assert value(m, cards, service=service, topic="vitd-deficiency", indicator="warning") == 3
    assert value(m, cards, service=service, topic="k2-consideration", indicator="info") == 3
    assert total(m, cards) == 6

    fb = "vitd_cds_feedback_total"
    assert value(m, fb, service=service, topic="vitd-deficiency", outcome="accepted") == 1
    assert value(m, fb, service=service, topic="vitd-deficiency", outcome="overridden") == 1
    assert value(m, fb, service=service, topic="k2-consideration", outcome="overridden") == 1
    assert value(m, fb, service=service, topic="unknown", outcome="accepted") == 1
    assert total(m, fb) == 4

    # All data came in prefetch: no FHIR query was made.
    assert total(m, "vitd_cds_fhir_request_duration_seconds_count") == 0

    # A second scrape sees the first one.
    again = scrape(client)
    assert value(again, req, route="/metrics", service="none", status="200") == 1


def test_fhir_queries_latency_and_errors(client):
    service = "vitamin-d-patient-view"
    with FhirStub() as stub:
        stub.add(f"Patient/{PATIENT_ID}", patient())
        stub.add("Observation", searchset([]))
        stub.add("MedicationRequest", searchset([]))
        stub.add("MedicationStatement", Reply(status=503))
        # Condition is not routed: the stub answers 404.
        reply = client.post(
            f"/cds-services/{service}", json=hook_request(service, fhir_server=stub.base_url)
        )
        assert reply.status_code == 412
        assert len(stub.requests) == 5
    m = scrape(client)
    hist = "vitd_cds_fhir_request_duration_seconds"
    assert value(m, f"{hist}_count", result="ok") == 3
    assert value(m, f"{hist}_count", result="error") == 2
    assert value(m, "vitd_cds_fhir_errors_total", reason="http_5xx") == 1
    assert value(m, "vitd_cds_fhir_errors_total", reason="not_found") == 1
    assert value(m, "vitd_cds_http_requests_total",
                 route="/cds-services/<service_id>", service=service, status="412") == 1


def test_authentication_rejections_are_counted(make_app, settings):
    client = make_app(settings.with_overrides(auth_disabled=False)).test_client()
    service = "vitamin-d-patient-view"
    for _ in range(2):
        reply = client.post(f"/cds-services/{service}", json=hook_request(service))
        assert reply.status_code == 401
    reply = client.post(f"/cds-services/{service}/feedback", json={"feedback": []})
    assert reply.status_code == 401
    m = scrape(client)
    assert total(m, "vitd_cds_jwt_rejections_total") == 3
    assert total(m, "vitd_cds_http_requests_total", status="401") == 3
    # Discovery and the scrape stay public.
    assert client.get("/cds-services").status_code == 200


def test_apps_do_not_share_counters(make_app, settings, tmp_path):
    first = make_app(settings).test_client()
    second = make_app(
        settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'other.sqlite3'}")
    ).test_client()
    first.get("/healthz")
    assert value(scrape(first), "vitd_cds_http_requests_total",
                 route="/healthz", service="none", status="200") == 1
    assert total(scrape(second), "vitd_cds_http_requests_total", route="/healthz") == 0


@pytest.mark.parametrize(
    ("reason", "label"),
    [("HTTP 503", "http_5xx"), ("HTTP 429", "http_4xx"), ("timeout", "timeout"),
     ("connection failed", "connection_failed"), ("response too large", "response_too_large"),
     ("", "other")],
)
def test_fhir_error_reasons_are_bounded_labels(reason, label):
    assert fhir_error_reason(reason) == label


# --- labelled children cached per metric: same series, same exposition, bounded ----------------

_CARDS = [_card("vitd-deficiency", "warning"), _card("k2-consideration", "info"),
          _card("Odd Topic!", "critical"), {"indicator": 7}]  # fmt: skip
_WITHHELD = [("vitd-deficiency", "deduplicated"), ("k2-consideration", "silent"), (None, "")]
_FEEDBACK = [("vitd-deficiency", "accepted"), (None, "overridden")]


def _drive(m) -> None:
    """One of every recording, twice (the second time from the caches)."""
    for _ in range(2):
        m.observe_request("/cds-services/<service_id>", "vitamin-d-order-sign", 200, 0.003)
        m.observe_request("/healthz", "none", 404, 0.2)
        m.observe_cards("vitamin-d-order-sign", _CARDS)
        m.observe_withheld("vitamin-d-order-sign", _WITHHELD)
        m.observe_feedback("vitamin-d-patient-view", _FEEDBACK)
        m.observe_fhir(0.02, None)
        m.observe_fhir(0.3, "HTTP 503")
        m.observe_card_queue(3, 2)


def _drive_uncached(m) -> None:
    """What `_drive` records, through `.labels()` with the label values spelled out."""
    for _ in range(2):
        for route, service, status, seconds in [
            ("/cds-services/<service_id>", "vitamin-d-order-sign", "200", 0.003),
            ("/healthz", "none", "404", 0.2),
        ]:
            m.requests.labels(route, service, status).inc()
            m.request_seconds.labels(route, service, status).observe(seconds)
        for topic, indicator in [("vitd-deficiency", "warning"), ("k2-consideration", "info"),
                                 ("odd_topic", "critical"), ("unknown", "unknown")]:  # fmt: skip
            m.cards.labels("vitamin-d-order-sign", topic, indicator).inc()
        for topic, reason in [("vitd-deficiency", "deduplicated"), ("k2-consideration", "silent"),
                              ("unknown", "unknown")]:  # fmt: skip
            m.withheld.labels("vitamin-d-order-sign", topic, reason).inc()
        for topic, outcome in [("vitd-deficiency", "accepted"), ("unknown", "overridden")]:
            m.feedback.labels("vitamin-d-patient-view", topic, outcome).inc()
        m.fhir_seconds.labels("ok").observe(0.02)
        m.fhir_seconds.labels("error").observe(0.3)
        m.fhir_errors.labels("http_5xx").inc()
        m.cards_queued.labels("database").set(3)
        m.cards_dropped.labels("database").inc(2)


def _exposition_without_created(m) -> list[str]:
    """The scrape text, less the `_created` timestamps (when each series was first made)."""
    return [line for line in m.exposition().decode().splitlines() if "_created" not in line]


def test_cached_children_leave_the_exposition_unchanged():
    cached, plain = Metrics(), Metrics()
    _drive(cached)
    _drive_uncached(plain)
    assert _exposition_without_created(cached) == _exposition_without_created(plain)
    samples = scrape_text(cached.exposition().decode())
    assert value(samples, "vitd_cds_cards_total", service="vitamin-d-order-sign",
                 topic="odd_topic", indicator="critical") == 2  # fmt: skip
    assert value(samples, "vitd_cds_http_requests_total", route="/healthz", service="none",
                 status="404") == 2  # fmt: skip


def test_cached_children_are_the_series_labels_returns():
    m = Metrics()
    m.observe_request("/healthz", "none", 200, 0.001)
    m.requests.labels("/healthz", "none", "200").inc()  # another caller, the plain way
    m.observe_request("/healthz", "none", 200, 0.001)
    assert m.requests.labels("/healthz", "none", "200")._value.get() == 3


def test_the_label_caches_are_bounded(monkeypatch):
    """Hostile topic codes or reasons cannot grow the caches past their bound; each is still
    counted."""
    m = Metrics()
    n = metrics_module.MAX_CACHED_CHILDREN + 50
    m.observe_cards("vitamin-d-order-sign",
                    [_card(f"topic-{i}", "info") for i in range(n)])  # fmt: skip
    assert len(m._cards._cache) == metrics_module.MAX_CACHED_CHILDREN
    assert metrics_module._slug.cache_info().currsize <= metrics_module.MAX_CACHED_CHILDREN
    samples = scrape_text(m.exposition().decode())
    assert total(samples, "vitd_cds_cards_total") == n
    assert value(samples, "vitd_cds_cards_total", service="vitamin-d-order-sign",
                 topic=f"topic-{n - 1}", indicator="info") == 1  # fmt: skip


_MULTIPROCESS_SCRIPT = """
import os, sys
from cds_service.metrics import Metrics
m = Metrics(os.environ["PROMETHEUS_MULTIPROC_DIR"])
m.observe_request("/healthz", "none", 200, 0.001)  # the child is made and cached here ...
pid = os.fork()
if pid == 0:  # ... and used again in a forked worker, which must count in its own file
    m.observe_request("/healthz", "none", 200, 0.001)
    m.observe_cards("vitamin-d-order-sign", [{"indicator": "info",
                    "source": {"topic": {"code": "vitd-deficiency"}}}])
    os._exit(0)
os.waitpid(pid, 0)
sys.stdout.write(m.exposition().decode())
"""


def test_cached_children_count_in_each_workers_file_in_multiprocess_mode(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _MULTIPROCESS_SCRIPT], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    samples = scrape_text(out)
    assert value(samples, "vitd_cds_http_requests_total", route="/healthz", service="none",
                 status="200") == 2  # fmt: skip
    assert value(samples, "vitd_cds_cards_total", service="vitamin-d-order-sign",
                 topic="vitd-deficiency", indicator="info") == 1  # fmt: skip
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # the parent's and the child's


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_multiprocess_dir_leaves_no_files_where_invoke_runs(tmp_path, blank):
    """`PROMETHEUS_MULTIPROC_DIR=` (set, empty) means unset: `cds-service invoke` used to leave
    prometheus-client's counter_*.db and histogram_*.db in the directory it ran from."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": blank,
        "CDS_AUTH_DISABLED": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store' / 'cds.sqlite3'}",
    }
    run = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "invoke", "vitamin-d-order-sign",
         "--patient", "adult-deficient"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "deficien" in run.stdout.lower()  # the card was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
