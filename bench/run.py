"""`make bench`: the three benchmark scenarios of issue 8, printed with their ratios.

1. Throughput and p50/p99 at 16 connections, realistic order-sign call (full prefetch: 20
   Observations, 15 MedicationRequests, 10 Conditions, a draft D3 + K2 order), the service
   under gunicorn (2 workers, auth on: a bench JWT issuer, ES384, a fresh `jti` per request,
   `aud` = the called URL, `exp` 10 minutes ahead) against the framework floor: a bare Flask
   app echoing the JSON under the same gunicorn settings, driven by the same load generator.
2. No prefetch, a loopback FHIR stub adding 50 ms to every query: call latency / 50 ms.
3. Peak RSS per worker after 10,000 requests, and growth over them.

    .venv/bin/python bench/run.py [--auth off] [--requests 10000] [--connections 16]

`--auth off` runs the service with CDS_AUTH_DISABLED=1 (the JWTs are still sent); use it when
the service in this checkout cannot verify JWTs. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.* and tests.*

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from jwt.algorithms import ECAlgorithm  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.record import fhir_record, order_sign_request, prefetchless_request  # noqa: E402
from tests.fhir_stub import FhirStub  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402

ISSUER = "https://bench-issuer.example.org"
ORDER_SIGN = "/cds-services/vitamin-d-order-sign"
PATIENT_VIEW = "/cds-services/vitamin-d-patient-view"


class BenchIssuer:
    """An ES384 key pair and the trusted-issuer file (contract §6) that trusts it."""

    def __init__(self, directory: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": "bench-1", "alg": "ES384", "use": "sig"})
        self.file = directory / "trusted-issuers.json"
        self.file.write_text(json.dumps([{"iss": ISSUER, "jwks": {"keys": [jwk]}}]))

    def token(self, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "bench-ehr",
            "aud": audience,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": "bench-1"})

    def jobs(self, base_url: str, path: str, body: bytes, n: int) -> list[loadgen.Job]:
        """`n` requests, each with its own signed token (signed before the clock starts)."""
        return [
            loadgen.Job(path, body, {"Authorization": f"Bearer {self.token(base_url + path)}"})
            for _ in range(n)
        ]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(server: ServerProcess, jobs: list[loadgen.Job], connections: int) -> loadgen.Result:
    return loadgen.run("127.0.0.1", server.port, jobs, connections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", choices=["on", "off"], default="on")
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests per app")
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both apps)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (both apps)")
    parser.add_argument("--fhir-delay", type=float, default=0.05, help="stub delay per query, s")
    parser.add_argument("--prefetchless-calls", type=int, default=100)
    parser.add_argument("--database-url", help="store (default: a fresh SQLite file)")
    parser.add_argument("--redis-url", help="REDIS_URL for the service (JWT replay store)")
    args = parser.parse_args()

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vitd-bench-") as tmp:
        tmpdir = Path(tmp)
        issuer = BenchIssuer(tmpdir)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            "DATABASE_URL": args.database_url or f"sqlite:///{tmpdir / 'bench.sqlite3'}",
            "CDS_TRUSTED_ISSUERS_FILE": str(issuer.file),
            "CDS_PUBLIC_BASE_URL": base,
            "CDS_AUTH_DISABLED": "1" if args.auth == "off" else "0",
            "PROMETHEUS_MULTIPROC_DIR": "",
        }
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        body = json.dumps(order_sign_request()).encode()
        store = env["DATABASE_URL"].split(":")[0]
        print(
            f"store {store}, REDIS_URL {'set' if args.redis_url else 'unset'}; auth {args.auth}; "
            f"gunicorn {args.workers} workers x {args.threads} threads; "
            f"order-sign request {len(body):,} bytes; {args.connections} connections; "
            f"{args.requests:,} measured requests after {args.warmup:,} warm-up"
        )

        # --- 1 + 3: the service -------------------------------------------------------------
        with ServerProcess(
            env=env, workers=args.workers, threads=args.threads, port=port
        ) as server:
            probe = measure(server, issuer.jobs(base, ORDER_SIGN, body, 1), 1)
            if probe.statuses.get(200) != 1:
                print(
                    f"a signed call was refused ({probe.statuses}, {probe.sample_body[:200]!r}):"
                    " this checkout cannot verify JWTs; run with --auth off",
                    file=sys.stderr,
                )
                return 2
            print(f"service answer: {probe.sample_body[:300].decode(errors='replace')}")
            workers = server.worker_pids()
            measure(server, issuer.jobs(base, ORDER_SIGN, body, args.warmup), args.connections)
            rss_warm = {pid: rss_mb(pid)[0] for pid in workers}
            service = measure(
                server, issuer.jobs(base, ORDER_SIGN, body, args.requests), args.connections
            )
            rss_after = {pid: rss_mb(pid) for pid in workers}

            # --- 2: no prefetch, slow FHIR ----------------------------------------------------
            with FhirStub(delay_s=args.fhir_delay) as stub:
                for route, reply in fhir_record().items():
                    stub.add(route, reply)
                pv_body = json.dumps(prefetchless_request(stub.base_url)).encode()
                measure(server, issuer.jobs(base, PATIENT_VIEW, pv_body, 10), 1)  # warm-up
                queries_before = len(stub.requests)
                prefetchless = measure(
                    server, issuer.jobs(base, PATIENT_VIEW, pv_body, args.prefetchless_calls), 1
                )
                queries = (len(stub.requests) - queries_before) / args.prefetchless_calls
        service_out = server.output

        # --- the floor: bare Flask + gunicorn echo -------------------------------------------
        floor_port = free_port()
        floor_server = ServerProcess(
            env={"PYTHONPATH": str(REPO)}, workers=args.workers, port=floor_port,
            argv=[sys.executable, "-m", "gunicorn", "--workers", str(args.workers),
                  "--threads", str(args.threads),
                  "--worker-class", "gthread", "--bind", f"127.0.0.1:{floor_port}",
                  "bench.echo_app:app"],
        )  # fmt: skip
        with floor_server:
            floor_jobs = [
                loadgen.Job(ORDER_SIGN, body, job.headers)
                for job in issuer.jobs(base, ORDER_SIGN, b"", args.warmup)
            ]
            measure(floor_server, floor_jobs, args.connections)
            floor_jobs = [
                loadgen.Job(ORDER_SIGN, body, job.headers)
                for job in issuer.jobs(base, ORDER_SIGN, b"", args.requests)
            ]
            floor = measure(floor_server, floor_jobs, args.connections)

    print("\n== 1. order-sign, full prefetch, 16 connections ==")
    print(f"service: {service.summary()}")
    print(f"floor:   {floor.summary()}")
    print(
        f"throughput ratio service/floor: {service.throughput / floor.throughput:.2f} "
        f"(target >= 0.50); service p99 {service.percentile(99) * 1000:.1f} ms (target <= 25)"
    )

    print(f"\n== 2. no prefetch, FHIR stub +{args.fhir_delay * 1000:.0f} ms per query ==")
    lat = prefetchless.latencies_s
    print(f"{prefetchless.summary()}")
    print(f"FHIR queries per call: {queries:.1f}")
    print(
        f"median {statistics.median(lat) * 1000:.1f} ms = "
        f"{statistics.median(lat) / args.fhir_delay:.2f} x one query; "
        f"p99 {prefetchless.percentile(99) * 1000:.1f} ms = "
        f"{prefetchless.percentile(99) / args.fhir_delay:.2f} x (target <= 1.3)"
    )

    print(
        f"\n== 3. RSS per worker after {args.warmup + args.requests + 1:,} order-sign requests =="
    )
    for pid in workers:
        now, peak = rss_after[pid]
        print(
            f"worker {pid}: RSS {now:.1f} MB (peak {peak:.1f} MB; after warm-up "
            f"{rss_warm[pid]:.1f} MB, growth over {args.requests:,} requests "
            f"{now - rss_warm[pid]:+.1f} MB)  (target <= 120 MB, no growth)"
        )
    load_end = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} CPUs; load average (1 min) {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end (other work on the machine skews every figure above)"
    )
    errors = [line for line in service_out.splitlines() if '"level": "error"' in line]
    print(f"\nservice log: {len(errors)} error lines")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
