"""The operator's resilience probe of issue 21, repeated and printed as a table.

The service runs under `cds-service serve` (2 workers, auth on with a bench issuer, the real
PostgreSQL at 127.0.0.1:5432 in a fresh schema, Redis at 127.0.0.1:6379 as the replay store),
both behind `tests.fault_proxy.FaultProxy`. Each store scenario runs a fault window of
`--seconds` while clients keep calling:

- hook calls (order-sign, full prefetch: no FHIR, no database needed), 2 callers;
- feedback posts, 4 posters;
- `/healthz` and `/readyz` probes every 0.5 s (client timeout 2 s, as a kubelet probe);

then heals the fault and measures the recovery: seconds until feedback is stored (200) and
`/readyz` says 200 again. FHIR scenarios: 16 callers to a FHIR server answering in 3 s next to
prefetch-only callers and callers of a healthy FHIR server; 8 callers of a FHIR server sending
10 MB bodies (peak RSS of the workers).

    .venv/bin/python bench/faults.py [--seconds 8] [--only db-blackhole,fhir-slow] [--threads N]

Figures are printed, never asserted (the tests assert behaviour, not times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.* and tests.*

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.record import fhir_record, order_sign_request, prefetchless_request  # noqa: E402
from bench.run import ORDER_SIGN, PATIENT_VIEW, BenchIssuer, rss_mb, service_env  # noqa: E402
from tests.fault_proxy import FaultProxy  # noqa: E402
from tests.fhir_stub import FhirStub, Reply  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FEEDBACK = "/cds-services/vitamin-d-order-sign/feedback"
CLIENT_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 2.0


@dataclass
class Samples:
    """Latencies (s) and statuses of one kind of request; status 0 = client timeout/error."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after: int = 0  # 503s that carried Retry-After
    errors: dict[int, str] = field(default_factory=dict)  # first body per error status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, status: int, retry_after: bool = False, body: str = "") -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.retry_after += bool(retry_after)
            if status >= 400 and status not in self.errors:
                self.errors[status] = body[:160]

    def summary(self) -> str:
        if not self.latencies:
            return "-"
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered)
        top = ordered[-1]
        codes = " ".join(
            f"{'timeout' if s == 0 else s}x{n}" for s, n in sorted(self.statuses.items())
        )
        return f"p50 {_fmt(p50)} max {_fmt(top)} [{codes}]"


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


class Bench:
    def __init__(self, server: ServerProcess, issuer: BenchIssuer) -> None:
        self.server = server
        self.issuer = issuer
        self.base = server.base_url

    def post(self, path: str, body: dict, timeout: float = CLIENT_TIMEOUT_S):
        token = self.issuer.token(self.base + path)
        return requests.post(
            self.base + path,
            data=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def timed(self, samples: Samples, call: Callable[[], requests.Response]) -> int:
        started = time.monotonic()
        try:
            reply = call()
        except requests.RequestException:
            samples.add(time.monotonic() - started, 0)
            return 0
        samples.add(
            time.monotonic() - started,
            reply.status_code,
            "Retry-After" in reply.headers,
            reply.text if reply.status_code >= 400 else "",
        )
        return reply.status_code

    def feedback_body(self) -> dict:
        return {
            "feedback": [
                {
                    "card": str(uuid.uuid4()),
                    "outcome": "overridden",
                    "overrideReason": {"reason": {"code": "not-relevant", "system": "urn:x"}},
                    "outcomeTimestamp": "2026-12-04T08:00:00Z",
                }
            ]
        }

    def get(self, path: str, timeout: float = PROBE_TIMEOUT_S):
        return requests.get(self.base + path, timeout=timeout)


def _loop(stop: threading.Event, every_s: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            action()
            stop.wait(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def store_scenario(bench: Bench, proxy: FaultProxy, mode: str, seconds: float) -> dict:
    hook, feedback, healthz, readyz = Samples(), Samples(), Samples(), Samples()
    stop = threading.Event()
    body = order_sign_request()
    threads = [
        *(_loop(stop, 0.05, lambda: bench.timed(hook, lambda: bench.post(ORDER_SIGN, body)))
          for _ in range(2)),
        *(_loop(stop, 0.05, lambda: bench.timed(
            feedback, lambda: bench.post(FEEDBACK, bench.feedback_body())))
          for _ in range(4)),
        _loop(stop, 0.5, lambda: bench.timed(healthz, lambda: bench.get("/healthz"))),
        _loop(stop, 0.5, lambda: bench.timed(readyz, lambda: bench.get("/readyz"))),
    ]  # fmt: skip
    time.sleep(1.0)  # healthy first
    proxy.set(mode, delay_s=2.0 if mode == "slow" else 0.0)
    time.sleep(seconds)
    proxy.set("pass")
    healed = time.monotonic()
    stop.set()
    recovery = _recovery(bench, healed)
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S + 5)
    return {
        "hook": hook,
        "feedback": feedback,
        "healthz": healthz,
        "readyz": readyz,
        "recovery": recovery,
    }


def _recovery(bench: Bench, healed: float, limit_s: float = 90.0) -> str:
    """Seconds from the heal until feedback is stored and /readyz says 200."""
    stored = ready = None
    while time.monotonic() - healed < limit_s and (stored is None or ready is None):
        try:
            if stored is None and bench.post(FEEDBACK, bench.feedback_body(), 5).status_code == 200:
                stored = time.monotonic() - healed
            if ready is None and bench.get("/readyz").status_code == 200:
                ready = time.monotonic() - healed
        except requests.RequestException:
            pass
        time.sleep(0.1)
    show = lambda v: "never" if v is None else _fmt(v)  # noqa: E731
    return f"feedback {show(stored)}, readyz {show(ready)}"


def fhir_slow_scenario(bench: Bench, slow: FhirStub, healthy: FhirStub, seconds: float) -> dict:
    to_slow, prefetch_only, to_healthy = Samples(), Samples(), Samples()
    stop = threading.Event()
    slow_body = prefetchless_request(slow.base_url)
    healthy_body = prefetchless_request(healthy.base_url)
    body = order_sign_request()
    threads = [
        *(_loop(stop, 0.0, lambda: bench.timed(
            to_slow, lambda: bench.post(PATIENT_VIEW, slow_body)))
          for _ in range(16)),
        *(_loop(stop, 0.1, lambda: bench.timed(prefetch_only, lambda: bench.post(ORDER_SIGN, body)))
          for _ in range(2)),
        *(_loop(stop, 0.1, lambda: bench.timed(
            to_healthy, lambda: bench.post(PATIENT_VIEW, healthy_body)))
          for _ in range(2)),
    ]  # fmt: skip
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S + 5)
    return {
        "slow FHIR (3 s) callers": to_slow,
        "prefetch-only": prefetch_only,
        "healthy FHIR": to_healthy,
    }


def fhir_huge_scenario(bench: Bench, huge: FhirStub, seconds: float) -> dict:
    to_huge, prefetch_only = Samples(), Samples()
    stop = threading.Event()
    huge_body = prefetchless_request(huge.base_url)
    body = order_sign_request()
    before = {pid: rss_mb(pid) for pid in bench.server.worker_pids()}
    threads = [
        *(_loop(stop, 0.0, lambda: bench.timed(
            to_huge, lambda: bench.post(PATIENT_VIEW, huge_body)))
          for _ in range(8)),
        _loop(stop, 0.1, lambda: bench.timed(prefetch_only, lambda: bench.post(ORDER_SIGN, body))),
    ]  # fmt: skip
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S + 5)
    after = {pid: rss_mb(pid) for pid in bench.server.worker_pids()}
    peak = max((hwm for _, hwm in after.values()), default=0.0)
    start = max((rss for rss, _ in before.values()), default=0.0)
    return {
        "10 MB FHIR callers": to_huge,
        "prefetch-only": prefetch_only,
        "worker RSS": f"{start:.0f} MB before, peak {peak:.0f} MB",
    }


def huge_bundle() -> bytes:
    """A searchset of about 10 MB: padded Observations that are not ours."""
    entry = {"resource": {"resourceType": "Observation", "id": "x", "status": "final",
                          "code": {"text": "padding " + "x" * 1000}}}  # fmt: skip
    one = json.dumps(entry)
    count = (10 * 1024 * 1024 - 200) // (len(one) + 1)
    return ('{"resourceType":"Bundle","type":"searchset","entry":['
            + ",".join([one] * count) + "]}").encode()  # fmt: skip


SCENARIOS = ("db-blackhole", "db-cut", "db-slow", "redis-blackhole", "redis-cut",
             "fhir-slow", "fhir-huge")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each fault window")
    parser.add_argument("--only", default="", help="scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--threads", type=int, default=None, help="gunicorn threads per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--errors", action="store_true", help="print the first error bodies")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra service environment (repeatable)")  # fmt: skip
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    results: dict[str, dict] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            FaultProxy(5432) as db_proxy,
            FaultProxy(6379) as redis_proxy,
            FhirStub(delay_s=3.0) as slow,
            FhirStub() as healthy,
            FhirStub() as huge,
        ):
            for route, reply in fhir_record().items():
                slow.add(route, reply)
                healthy.add(route, reply)
                huge.add(route, reply)
            fhir_json = {"Content-Type": "application/fhir+json"}
            huge.add("Observation", Reply(huge_bundle(), headers=fhir_json))
            issuer = BenchIssuer(Path(tmp))
            database_url = (f"postgresql://postgres@127.0.0.1:{db_proxy.port}/test"
                            f"?options=-csearch_path%3D{schema}")  # fmt: skip
            port = free_port()
            env = service_env(Path(tmp), issuer, f"http://127.0.0.1:{port}", database_url)
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_proxy.port}/0"
            env.update(item.split("=", 1) for item in args.env)
            server = ServerProcess(env=env, port=port, workers=args.workers, threads=args.threads)
            with server:
                bench = Bench(server, issuer)
                for name in chosen:
                    started = time.monotonic()
                    print(f"-- {name} ...", file=sys.stderr, flush=True)
                    if name.startswith("db-"):
                        results[name] = store_scenario(bench, db_proxy, name[3:], args.seconds)
                    elif name.startswith("redis-"):
                        results[name] = store_scenario(bench, redis_proxy, name[6:], args.seconds)
                    elif name == "fhir-slow":
                        results[name] = fhir_slow_scenario(bench, slow, healthy, args.seconds)
                    else:
                        results[name] = fhir_huge_scenario(bench, huge, args.seconds)
                    print(f"   ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
                    time.sleep(1.0)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    for name, figures in results.items():
        print(f"\n## {name}")
        for what, value in figures.items():
            if isinstance(value, Samples):
                errors = "; ".join(f"{s}: {b}" for s, b in sorted(value.errors.items()))
                value = value.summary() + (f" retry-after {value.retry_after}" if
                                           value.retry_after else "")  # fmt: skip
                if args.errors and errors:
                    value += f"\n  {'':28} {errors}"
            print(f"  {what:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
