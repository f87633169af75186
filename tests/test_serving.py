"""`cds-service serve` under real gunicorn: settings from env and flags, graceful stop,
multiprocess metrics aggregated across workers."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from cds_service import cli
from cds_service.config import Settings
from tests.fhir_stub import FhirStub, searchset

from .builders import PATIENT_ID, hook_request, patient
from .server_process import ServerProcess

SERVICE = "vitamin-d-patient-view"


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run `serve` without gunicorn: capture the settings and reload flag it would run with."""
    seen: dict = {}

    def fake_run(settings: Settings, reload: bool) -> None:
        seen["settings"], seen["reload"] = settings, reload
        seen["metrics_dir_exists"] = Path(settings.metrics_multiproc_dir).is_dir()

    monkeypatch.setattr(cli, "_run_gunicorn", fake_run)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 's.sqlite3'}")
    for name in ("HOST", "PORT", "WEB_CONCURRENCY", "WEB_THREADS", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_serve_takes_workers_and_threads_from_env(captured, monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("WEB_THREADS", "6")
    monkeypatch.setenv("PORT", "9123")
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.host, s.port, s.workers, s.threads) == ("127.0.0.1", 9123, 3, 6)
    assert captured["reload"] is False


def test_serve_flags_beat_env(captured, monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    result = CliRunner().invoke(
        cli.main,
        [
            "serve",
            "--host",
            "::1",
            "--port",
            "9000",
            "--workers",
            "1",
            "--threads",
            "2",
            "--reload",
        ],
    )
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.host, s.port, s.workers, s.threads) == ("::1", 9000, 1, 2)
    assert captured["reload"] is True


def test_serve_makes_and_removes_its_own_metrics_dir(captured):
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    made = Path(captured["settings"].metrics_multiproc_dir)
    assert captured["metrics_dir_exists"] and made.name.startswith("vitd-cds-metrics-")
    assert not made.exists()


def test_serve_empties_a_configured_metrics_dir(captured, monkeypatch, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"stale")
    (metrics_dir / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    assert captured["settings"].metrics_multiproc_dir == str(metrics_dir)
    assert sorted(p.name for p in metrics_dir.iterdir()) == ["keep.txt"]


def test_gunicorn_options():
    settings = Settings(host="127.0.0.1", port=8081, workers=3, threads=5, graceful_timeout_s=7)
    options = cli.gunicorn_options(settings, reload=True)
    assert options["bind"] == "127.0.0.1:8081"
    assert (options["workers"], options["threads"], options["graceful_timeout"]) == (3, 5, 7)
    assert options["reload"] is True
    assert options["worker_class"] == "cds_service.arrival.ArrivalThreadWorker"
    assert cli.gunicorn_options(settings, reload=False)["reload"] is False


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CDS_AUTH_DISABLED": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": "",
        **extra,
    }


def _samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _discovery_count(files: list[Path]) -> float:
    """`GET /cds-services` answers counted in these multiprocess files (0 if none yet)."""
    if not all(f.exists() for f in files):
        return 0
    for metric in MultiProcessCollector.merge([str(f) for f in files], accumulate=True):
        for sample in metric.samples:
            if sample.name == "vitd_cds_http_requests_total" and sample.labels == {
                "route": "/cds-services",
                "service": "none",
                "status": "200",
            }:
                return sample.value
    return 0


@pytest.mark.slow
def test_metrics_add_up_across_gunicorn_workers(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"\0" * 8)  # a previous run's file
    env = _env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with ServerProcess(env=env, workers=2) as server:
        assert not (metrics_dir / "counter_999999.db").exists()
        workers = server.worker_pids()
        files = [metrics_dir / f"counter_{pid}.db" for pid in workers]
        sent = 0
        # New connections until both workers have answered some (the kernel picks the worker).
        while sent == 0 or (sent < 3000 and 0 in [_discovery_count([f]) for f in files]):
            for _ in range(20):
                assert requests.get(f"{server.base_url}/cds-services", timeout=5).ok
            sent += 20
        per_worker = [_discovery_count([f]) for f in files]
        scrapes = [
            _samples(requests.get(f"{server.base_url}/metrics", timeout=5).text) for _ in range(6)
        ]
    assert server.returncode == 0, server.output
    assert len(workers) == 2
    # Each worker counted in its own file; both answered some ...
    assert all(n > 0 for n in per_worker) and sum(per_worker) == sent, per_worker
    # ... and every scrape, whichever worker answers it, sums them all.
    key = (
        "vitd_cds_http_requests_total",
        (("route", "/cds-services"), ("service", "none"), ("status", "200")),
    )
    assert all(s[key] == sent for s in scrapes)
    print(f"both workers answered within {sent} requests")


@pytest.mark.slow
def test_sigterm_lets_calls_in_flight_finish(tmp_path):
    """A call still gathering FHIR data when SIGTERM arrives is answered; then a prompt exit 0."""
    env = _env(tmp_path, CDS_GRACEFUL_TIMEOUT_S="60", CDS_FHIR_BUDGET_S="10")
    with (
        FhirStub(delay_s=1.5) as stub,
        ServerProcess(env=env, workers=1, stop_timeout_s=20) as server,
    ):
        stub.add(f"Patient/{PATIENT_ID}", patient())
        for resource_type in (
            "Observation",
            "MedicationRequest",
            "MedicationStatement",
            "Condition",
        ):
            stub.add(resource_type, searchset([]))
        # An idle keep-alive connection must not hold the stop up either.
        keepalive = requests.Session()
        assert keepalive.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
        result: dict = {}

        def call() -> None:
            result["reply"] = requests.post(
                f"{server.base_url}/cds-services/{SERVICE}",
                json=hook_request(SERVICE, fhir_server=stub.base_url),
                timeout=30,
            )

        caller = threading.Thread(target=call)
        caller.start()
        while not stub.requests and caller.is_alive():  # the call has reached the FHIR stage
            threading.Event().wait(0.05)
        server.terminate()
        caller.join(30)
        server.stop()  # kills after 20 s: a stop waiting out the 60 s grace period fails below
        keepalive.close()
    assert result["reply"].status_code == 200 and result["reply"].json() == {"cards": []}
    assert server.returncode == 0, server.output
    assert "Handling signal: term" in server.output
    # The worker's log lines (written by its background writer) are all out at exit.
    requests_logged = [
        json.loads(line)
        for line in server.output.splitlines()
        if line.startswith("{") and '"message": "request"' in line
    ]
    routes = [(r["route"], r["status"]) for r in requests_logged]
    assert routes[-1] == ("/cds-services/<service_id>", 200)  # answered last, logged last
    assert set(routes[:-1]) == {("/healthz", 200)}  # start-up polls and the keep-alive call


@pytest.mark.slow
def test_issued_cards_queued_in_a_worker_are_written_at_stop(tmp_path):
    """Under `serve` issued-card records are batched in the background; a stop loses none."""
    from cds_service import fixtures
    from cds_service.store import Store, issued_card

    database = tmp_path / "serve.sqlite3"
    body = fixtures.load("adult-deficient").request("vitamin-d-order-sign")
    with ServerProcess(env=_env(tmp_path), workers=1) as server:
        reply = requests.post(
            f"{server.base_url}/cds-services/vitamin-d-order-sign", json=body, timeout=10
        )
        assert reply.status_code == 200
        issued = sorted(card["uuid"] for card in reply.json()["cards"])
        assert issued
    assert server.returncode == 0, server.output
    store = Store(f"sqlite:///{database}")
    try:
        with store.engine.connect() as c:
            written = sorted(c.execute(sa.select(issued_card.c.card_uuid)).scalars())
    finally:
        store.dispose()
    assert written == issued


def test_worker_exit_hook_writes_queued_card_records(make_app, settings):
    app = make_app(settings)
    store = app.extensions["vitd.runtime"].store
    store.record_in_background(interval_s=60)  # nothing is written before the hook
    card = {"uuid": "0b7d4a4e-7d7c-4b8e-9a51-2f6f7a3c1d10", "indicator": "info",
            "source": {"topic": {"code": "vitd-deficiency"}}}  # fmt: skip
    store.record_cards("vitamin-d-patient-view", [card], issued_at=datetime.now(UTC))

    class Worker:
        wsgi = app

    cli.gunicorn_options(settings, reload=False)["worker_exit"](None, Worker())
    assert [row["topic"] for row in _issued(store)] == ["vitd-deficiency"]


def _issued(store) -> list[dict]:
    from cds_service.store import issued_card

    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(issued_card))]


def test_a_worker_freezes_what_it_loaded_out_of_the_collectors_way(settings):
    import gc

    from cds_service import logs

    assert gc.get_freeze_count() == 0
    threshold = gc.get_threshold()
    try:
        cli.gunicorn_options(settings, reload=False)["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000  # the app and its libraries, loaded by now
        # ... and young collections wait for more than one call's worth of live objects
        assert gc.get_threshold() == (cli.GC_YOUNG_THRESHOLD, *threshold[1:])
        assert cli.GC_YOUNG_THRESHOLD > 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        logs.stop_background_writer()
