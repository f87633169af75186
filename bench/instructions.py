"""`make bench-instructions`: instructions per order-sign call in a gunicorn worker, for the
service and for the framework floor, counted by valgrind (callgrind), so the figure does not
move with whatever else the machine is doing.

    .venv/bin/python bench/instructions.py [--requests 100] [--threads 4]

Each app runs under `valgrind --tool=callgrind` with one gunicorn worker (auth on for the
service: the same bench issuer and request as `bench/run.py`). After a warm-up the worker's
counters are zeroed (`callgrind_control -z`), the requests are sent one after the other, and
the counters are dumped (`callgrind_control -d`). Two runs on a quiet machine agree to about
0.1%; on a loaded one the service's count rises (its background threads, the card recorder,
the readiness check and the log writer, run for longer wall time: +0.5 M at a load average of
15), so compare runs made at the same load, back to back.

What the count leaves out: time in the kernel, cache misses, and waits for the GIL between a
worker's threads (requests go one at a time here). Under load the service also runs fewer
instructions per second than the floor (it touches more code and data), so its throughput
ratio in `bench/run.py` is lower than the instruction ratio printed here. Use this to tell
whether a change removed work; use `bench/run.py` for what a caller sees. Needs valgrind
(a Debian package; `valgrind --version`). Takes about two minutes; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.* and tests.*

import requests  # noqa: E402

from bench.record import order_sign_request  # noqa: E402
from bench.run import ORDER_SIGN, BenchIssuer, floor_argv, service_env  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402

WARMUP = 30


def totals(dump: Path) -> int:
    """The instruction total a callgrind dump states (its `summary:` or `totals:` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{dump}: no totals line")


def count(name: str, server: ServerProcess, issuer: BenchIssuer, body: bytes, n: int,
          out: Path) -> float:  # fmt: skip
    """Instructions per request in the one worker of `server` (started under valgrind, its
    dumps named `out`/`name`.PID)."""
    base = server.base_url
    with server, requests.Session() as session:
        (worker,) = server.worker_pids()

        def call(token: str) -> None:
            reply = session.post(
                base + ORDER_SIGN,
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=120,
            )
            if reply.status_code != 200:
                raise RuntimeError(f"{name}: {reply.status_code} {reply.text[:200]}")

        for _ in range(WARMUP):
            call(issuer.token(base + ORDER_SIGN))
        tokens = [issuer.token(base + ORDER_SIGN) for _ in range(n)]  # signed before counting
        subprocess.run(["callgrind_control", "-z", str(worker)], check=True, capture_output=True)
        for token in tokens:
            call(token)
        subprocess.run(["callgrind_control", "-d", str(worker)], check=True, capture_output=True)
        dump = out / f"{name}.{worker}.1"
        deadline = time.monotonic() + 60
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return totals(dump) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="counted requests per app")
    parser.add_argument("--threads", type=int, default=4, help="threads of the one worker")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="vitd-instructions-") as tmp:
        tmpdir = Path(tmp)
        issuer = BenchIssuer(tmpdir)
        body = json.dumps(order_sign_request()).encode()
        service_port, floor_port = free_port(), free_port()

        def grind(name: str) -> list[str]:
            return ["valgrind", "--tool=callgrind", "--trace-children=yes",
                    f"--callgrind-out-file={tmpdir}/{name}.%p"]  # fmt: skip

        base = f"http://127.0.0.1:{service_port}"
        service = ServerProcess(
            # valgrind runs the worker some 50 times slower: a loaded machine would otherwise
            # push a call past the FHIR time budget (a 503 that ends the count)
            env={**service_env(tmpdir, issuer, base), "CDS_FHIR_BUDGET_S": "600"},
            workers=1, threads=args.threads,
            port=service_port, launcher=grind("service"), start_timeout_s=600,
            stop_timeout_s=120,
        )  # fmt: skip
        floor = ServerProcess(
            env={"PYTHONPATH": str(REPO)}, workers=1, port=floor_port,
            argv=floor_argv(floor_port, 1, args.threads), launcher=grind("floor"),
            start_timeout_s=600, stop_timeout_s=120,
        )  # fmt: skip
        print(
            f"order-sign request {len(body):,} bytes, auth on (RS384); one gunicorn worker "
            f"x {args.threads} threads per app; {WARMUP} warm-up, then {args.requests} counted "
            "requests one at a time; both apps under valgrind at once (about two minutes)"
        )
        with ThreadPoolExecutor(2) as pool:
            counted = {
                name: pool.submit(count, name, server, issuer, body, args.requests, tmpdir)
                for name, server in (("service", service), ("floor", floor))
            }
            per_call = {name: future.result() for name, future in counted.items()}

    for name, value in per_call.items():
        print(f"{name:8s} {value / 1e6:6.2f} million instructions per request")
    print(
        f"floor/service: {per_call['floor'] / per_call['service']:.2f} (the throughput ratio if "
        "every instruction cost the same time; under load the service's cost more: see the "
        "module docstring)"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # as bench/run.py: the servers inherit it
    sys.exit(main())
