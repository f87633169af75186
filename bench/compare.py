"""Two checkouts of the service served side by side, measured in alternating rounds: worker CPU
per call (from /proc), throughput and p99 of each, and the per-round ratio of CPU per call.

    .venv/bin/python bench/compare.py OLD_CHECKOUT NEW_CHECKOUT [--requests 2000] [--rounds 8]

Use it to tell whether a change made the call cheaper: CPU speed on a shared machine drifts
between runs minutes apart (the floor's own CPU per call moved by a quarter between two
`make bench` runs here), while two versions served at the same time meet the same machine.
Each checkout runs from its own folder (`PYTHONPATH`, current directory) with this
interpreter, auth on (the bench issuer), the order-sign request of `bench/record.py`.
Make a checkout of an older commit with `git worktree add --detach /tmp/old <commit>`.
Nothing is asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for bench.* and tests.*

from bench import loadgen  # noqa: E402
from bench.record import order_sign_request  # noqa: E402
from bench.run import ORDER_SIGN, BenchIssuer, cpu_by_pid, service_env  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402


@contextlib.contextmanager
def _in(folder: Path):
    """Start a server from `folder`: `python -m cds_service.cli` imports the package there."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout measured as A")
    parser.add_argument("new", type=Path, help="checkout measured as B")
    parser.add_argument("--requests", type=int, default=2_000, help="calls per app per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    issuer = BenchIssuer(Path(tempfile.mkdtemp(prefix="vitd-compare-")))
    body = json.dumps(order_sign_request()).encode()
    apps: dict[str, tuple[ServerProcess, str]] = {}
    for name, folder in (("A", args.old.resolve()), ("B", args.new.resolve())):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**service_env(Path(tempfile.mkdtemp()), issuer, base), "PYTHONPATH": str(folder)}
        server = ServerProcess(env=env, workers=args.workers, threads=args.threads, port=port)
        apps[name] = (server, base)
    results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
    with contextlib.ExitStack() as stack:
        for name, folder in (("A", args.old.resolve()), ("B", args.new.resolve())):
            server, base = apps[name]
            with _in(folder):
                stack.enter_context(server)
            warm = issuer.jobs(base, ORDER_SIGN, body, 500)
            loadgen.run("127.0.0.1", server.port, warm, args.connections)
        for n in range(args.rounds):
            for name in ("A", "B") if n % 2 == 0 else ("B", "A"):
                server, base = apps[name]
                pids = server.worker_pids()
                jobs = issuer.jobs(base, ORDER_SIGN, body, args.requests)
                before = cpu_by_pid(pids)
                out = loadgen.run("127.0.0.1", server.port, jobs, args.connections)
                after = cpu_by_pid(pids)
                if out.statuses.get(200) != args.requests:
                    print(f"{name}: not every call answered 200: {out.statuses}", file=sys.stderr)
                    return 2
                spent = sum(after[p] - before[p] for p in pids) * 1000 / args.requests
                results[name].append((spent, out.throughput, out.percentile(99) * 1000))
    print(f"{args.rounds} alternating rounds of {args.requests:,} order-sign calls, "
          f"{args.connections} connections, {args.workers} workers x {args.threads} threads each")
    for name, folder in (("A", args.old), ("B", args.new)):
        cpu = [r[0] for r in results[name]]
        print(f"{name} ({folder}): CPU {statistics.median(cpu):.2f} ms/call median "
              f"({' '.join(f'{c:.2f}' for c in cpu)}), "
              f"{statistics.median(r[1] for r in results[name]):,.0f} calls/s, "
              f"p99 {statistics.median(r[2] for r in results[name]):.1f} ms")
    ratios = [b[0] / a[0] for a, b in zip(results["A"], results["B"], strict=True)]
    print(f"B/A CPU per call: median {statistics.median(ratios):.3f}, per round "
          + " ".join(f"{r:.2f}" for r in ratios))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
