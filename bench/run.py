"""`make bench`: the benchmark scenarios of issues 8 and 19, printed with their ratios.

1. Throughput and p50/p99 at 16 connections, realistic order-sign call (full prefetch: 20
   Observations, 15 MedicationRequests, 10 Conditions, a draft D3 + K2 order), the service
   under gunicorn (2 workers, auth on: a bench JWT issuer, RS384 as Epic signs by default, or
   `--alg ES384` as the sandbox does; a fresh `jti` per request,
   `aud` = the called URL, `exp` 10 minutes ahead) against the framework floor: a bare Flask
   app that parses the same JSON and answers a small card list (no echo) under the same
   gunicorn settings and worker class, driven by the same load generator; per alternating
   round and as medians, with worker CPU per call and calls per worker.
2. No prefetch, a loopback FHIR stub adding 50 ms to every query: call latency / 50 ms.
3. Peak RSS per worker after 10,000 requests, and growth over them.
4. The same order-sign call one after the other on one connection (an EHR's single user):
   p50/p99 of service and floor (`--sequential-calls`, default 1,000).
5. The spread over the workers at N = 2 to 64 connections (`--spread`): connections each
   worker holds right after N are opened at once, and calls each worker served (its share of
   the worker CPU) in a round of order-sign calls over N fresh connections.

    .venv/bin/python bench/run.py [--auth off] [--requests 10000] [--connections 16]

`--auth off` runs the service with CDS_AUTH_DISABLED=1 (the JWTs are still sent); use it when
the service in this checkout cannot verify JWTs. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.* and tests.*

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from jwt.algorithms import ECAlgorithm, RSAAlgorithm  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.record import fhir_record, order_sign_request, prefetchless_request  # noqa: E402
from tests.fhir_stub import FhirStub  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402
from tests.worker_connections import burst, held_per_worker  # noqa: E402

ISSUER = "https://bench-issuer.example.org"
ORDER_SIGN = "/cds-services/vitamin-d-order-sign"
PATIENT_VIEW = "/cds-services/vitamin-d-patient-view"


class BenchIssuer:
    """A key pair and the trusted-issuer file (contract §6) that trusts it.

    RS384 by default: Epic signs with it by default (reference/cds-hooks.md). ES384 is what the
    public sandbox signs with; checking an ES384 signature costs about 0.35 ms of CPU against
    0.04 ms for RS384 (PyJWT + cryptography, measured here), so `--alg ES384` shows that cost.
    """

    def __init__(self, directory: Path, alg: str = "RS384") -> None:
        self.alg = alg
        if alg == "ES384":
            self._key = ec.generate_private_key(ec.SECP384R1())
            jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        else:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": "bench-1", "alg": alg, "use": "sig"})
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
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": "bench-1"})

    def jobs(self, base_url: str, path: str, body: bytes, n: int) -> list[loadgen.Job]:
        """`n` requests, each with its own signed token (signed before the clock starts)."""
        return [
            loadgen.Job(path, body, {"Authorization": f"Bearer {self.token(base_url + path)}"})
            for _ in range(n)
        ]


def service_env(directory: Path, issuer: BenchIssuer, base_url: str, database_url: str | None = None
                ) -> dict[str, str]:  # fmt: skip
    """The service's environment in a benchmark: auth on, trusting `issuer`; SQLite by default."""
    return {
        "DATABASE_URL": database_url or f"sqlite:///{directory / 'bench.sqlite3'}",
        "CDS_TRUSTED_ISSUERS_FILE": str(issuer.file),
        "CDS_PUBLIC_BASE_URL": base_url,
        "CDS_AUTH_DISABLED": "0",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }


def floor_argv(port: int, workers: int, threads: int) -> list[str]:
    """The framework floor under the same gunicorn settings as the service."""
    return [sys.executable, "-m", "gunicorn", "--workers", str(workers),
            "--threads", str(threads),
            "--worker-class", "cds_service.gunicorn_worker.GracefulThreadWorker",
            "--bind", f"127.0.0.1:{port}", "bench.echo_app:app"]  # fmt: skip


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far, from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far, from /proc/PID/stat."""
    return sum(cpu_by_pid(pids).values())


def interpreter() -> str:
    """Which Python ran the figures: version, and whether it was built with PGO / LTO."""
    config = sysconfig.get_config_var("CONFIG_ARGS") or ""
    pgo = "--enable-optimizations" in config
    lto = "--with-lto" in config
    return (
        f"{platform.python_implementation()} {platform.python_version()} at {sys.executable} "
        f"(PGO {'yes' if pgo else 'no'}, LTO {'yes' if lto else 'no'})"
    )


def merged(results: list[loadgen.Result]) -> loadgen.Result:
    """Rounds as one result: all latencies, summed wall time and statuses."""
    statuses: dict[int, int] = {}
    for r in results:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return loadgen.Result(
        wall_s=sum(r.wall_s for r in results),
        latencies_s=[x for r in results for x in r.latencies_s],
        statuses=statuses,
        sample_body=results[0].sample_body,
    )


def measure(server: ServerProcess, jobs: list[loadgen.Job], connections: int) -> loadgen.Result:
    return loadgen.run("127.0.0.1", server.port, jobs, connections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", choices=["on", "off"], default="on")
    parser.add_argument("--alg", choices=["RS384", "ES384"], default="RS384", help="JWT signing")
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests per app")
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=10, help="alternating service/floor rounds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both apps)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (both apps)")
    parser.add_argument("--fhir-delay", type=float, default=0.05, help="stub delay per query, s")
    parser.add_argument("--prefetchless-calls", type=int, default=100)
    parser.add_argument("--sequential-calls", type=int, default=1_000,
                        help="heavy order-sign calls one after the other on one connection")
    parser.add_argument("--spread", default="2,4,8,16,32,64",
                        help="connection counts for scenario 5 ('' skips it)")
    parser.add_argument("--spread-calls", type=int, default=500,
                        help="order-sign calls per app and connection count in scenario 5")
    parser.add_argument("--database-url", help="store (default: a fresh SQLite file)")
    parser.add_argument("--redis-url", help="REDIS_URL for the service (JWT replay store)")
    args = parser.parse_args()

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vitd-bench-") as tmp:
        tmpdir = Path(tmp)
        issuer = BenchIssuer(tmpdir, args.alg)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = service_env(tmpdir, issuer, base, args.database_url)
        if args.auth == "off":
            env["CDS_AUTH_DISABLED"] = "1"
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        body = json.dumps(order_sign_request()).encode()
        store = env["DATABASE_URL"].split(":")[0]
        print(
            f"store {store}, REDIS_URL {'set' if args.redis_url else 'unset'}; "
            f"auth {args.auth} ({args.alg}); "
            f"gunicorn {args.workers} workers x {args.threads} threads; "
            f"order-sign request {len(body):,} bytes; {args.connections} connections; "
            f"{args.requests:,} measured requests after {args.warmup:,} warm-up"
        )

        floor_port = free_port()
        floor_server = ServerProcess(
            env={"PYTHONPATH": str(REPO)}, workers=args.workers, port=floor_port,
            argv=floor_argv(floor_port, args.workers, args.threads),
        )
        with (
            ServerProcess(env=env, workers=args.workers, threads=args.threads, port=port) as server,
            floor_server,
        ):
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
            apps = {"service": server, "floor": floor_server}
            for app in apps.values():  # warm-up
                measure(app, issuer.jobs(base, ORDER_SIGN, body, args.warmup), args.connections)
            rss_warm = {pid: rss_mb(pid)[0] for pid in workers}

            # --- 1 (+3): service and floor in alternating rounds --------------------------------
            # This machine gets faster and slower (other virtual machines share its cores):
            # alternating rounds lets both apps meet the same conditions, and the CPU time
            # their workers spend per request (from /proc) does not depend on them at all.
            rounds: dict[str, list[loadgen.Result]] = {name: [] for name in apps}
            cpu_ms = dict.fromkeys(apps, 0.0)
            # per round: CPU ms each worker spent (its share of the calls it served)
            round_cpu: dict[str, list[list[float]]] = {name: [] for name in apps}
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for name, app in apps.items():
                    jobs = issuer.jobs(base, ORDER_SIGN, body, per_round)
                    pids = app.worker_pids()
                    before = cpu_by_pid(pids)
                    rounds[name].append(measure(app, jobs, args.connections))
                    after = cpu_by_pid(pids)
                    spent = sorted(((after[p] - before[p]) * 1000 for p in pids), reverse=True)
                    round_cpu[name].append(spent)
                    cpu_ms[name] += sum(spent)
            rss_after = {pid: rss_mb(pid) for pid in workers}
            service, floor = merged(rounds["service"]), merged(rounds["floor"])

            # --- 4: one connection, one call after the other (an EHR's single user) ----------
            sequential = {
                name: measure(app, issuer.jobs(base, ORDER_SIGN, body, args.sequential_calls), 1)
                for name, app in apps.items()
            }

            # --- 5: spread over the workers at N connections ------------------------------------
            spread: list[tuple[int, str, list[int], list[float], float]] = []
            for n in [int(x) for x in args.spread.split(",") if x.strip()]:
                for name, app in apps.items():
                    pids = app.worker_pids()
                    socks = burst(app.port, n)
                    held = held_per_worker(pids, app.port)
                    for sock in socks:
                        sock.close()
                    before = cpu_by_pid(pids)
                    calls = max(args.spread_calls, n * 10)
                    result = measure(app, issuer.jobs(base, ORDER_SIGN, body, calls), n)
                    after = cpu_by_pid(pids)
                    spent = [(after[p] - before[p]) * 1000 for p in pids]
                    total = sum(spent) or 1.0
                    spread.append((n, name, sorted(held.values(), reverse=True),
                                   sorted((calls * s / total for s in spent), reverse=True),
                                   result.throughput))

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

    ratios = sorted(
        s.throughput / f.throughput for s, f in zip(rounds["service"], rounds["floor"], strict=True)
    )
    print(f"\n== 1. order-sign, full prefetch, {args.connections} connections ==")
    print(f"service: {service.summary()}")
    print(f"floor:   {floor.summary()}")
    print(
        f"throughput ratio service/floor: {service.throughput / floor.throughput:.2f} overall; "
        f"per round ({args.rounds} rounds of {per_round:,} requests each): median "
        f"{statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f} (target >= 0.35)"
    )
    print(f"\nper round ({per_round:,} calls each, service then floor; 'calls per worker' is each"
          " worker's share of the round's worker CPU, as calls served, busiest first):")
    print(f"{'round':>5} {'app':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/call':>11}"
          "  calls per worker")
    p99_multiples, cpu_ratios = [], []
    for i in range(args.rounds):
        for name in apps:
            r, spent = rounds[name][i], round_cpu[name][i]
            total = sum(spent) or 1.0
            split = " / ".join(f"{per_round * s / total:,.0f}" for s in spent)
            print(f"{i + 1:>5} {name:>7} {r.throughput:>7,.0f} {r.percentile(50) * 1000:>7.1f} "
                  f"{r.percentile(99) * 1000:>7.1f} {sum(spent) / per_round:>11.2f}  {split}")
        p99_multiples.append(rounds["service"][i].percentile(99)
                             / rounds["floor"][i].percentile(99))
        cpu_ratios.append(sum(round_cpu["floor"][i]) / (sum(round_cpu["service"][i]) or 1.0))
    for name in apps:
        rs = rounds[name]
        least = [min(c) / (sum(c) or 1.0) for c in round_cpu[name]]
        print(f"median {name:>7}: {statistics.median(r.throughput for r in rs):,.0f} req/s, "
              f"p50 {statistics.median(r.percentile(50) for r in rs) * 1000:.1f} ms, "
              f"p99 {statistics.median(r.percentile(99) for r in rs) * 1000:.1f} ms, "
              f"CPU {statistics.median(sum(c) for c in round_cpu[name]) / per_round:.2f} ms/call; "
              f"least-busy worker's share: median {statistics.median(least):.0%}, "
              f"lowest {min(least):.0%} (even: {1 / args.workers:.0%})")
    print(f"service p99 as a multiple of the floor's (same round): median "
          f"{statistics.median(p99_multiples):.2f}, range {min(p99_multiples):.2f}-"
          f"{max(p99_multiples):.2f} (target <= 3)")
    print(f"CPU ratio floor/service per call: median {statistics.median(cpu_ratios):.2f} "
          "(target >= 0.35)")
    n = per_round * args.rounds
    print(
        f"worker CPU per request: service {cpu_ms['service'] / n:.2f} ms, floor "
        f"{cpu_ms['floor'] / n:.2f} ms; floor/service {cpu_ms['floor'] / cpu_ms['service']:.2f} "
        "(the throughput ratio if the workers had the cores to themselves)"
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
    print(f"\n== 4. order-sign, full prefetch, one connection, {args.sequential_calls:,} calls "
          "one after the other ==")
    for name, result in sequential.items():
        print(f"{name:>7}: p50 {result.percentile(50) * 1000:.2f} ms, "
              f"p99 {result.percentile(99) * 1000:.2f} ms, "
              f"max {max(result.latencies_s) * 1000:.2f} ms"
              + (" (target: service p99 <= 10 ms)" if name == "service" else ""))

    if spread:
        print("\n== 5. spread over the workers: N connections opened at once ==")
        print(f"{'N':>3} {'app':>7}  {'connections held per worker':<28} "
              f"{'calls per worker (CPU share)':<29} {'req/s':>6}")
        for n, name, held, calls, throughput in spread:
            held_s = " / ".join(str(h) for h in held)
            calls_s = " / ".join(f"{c:,.0f}" for c in calls)
            print(f"{n:>3} {name:>7}  {held_s:<28} {calls_s:<29} {throughput:>6,.0f}")

    print(f"\ninterpreter (every figure above, service and floor): {interpreter()}")
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
