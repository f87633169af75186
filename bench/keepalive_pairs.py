"""Lost calls after an early refusal on a keep-alive connection, counted (issue 15, item 1).

Serves `cds-service serve` (gunicorn, auth on, a 64 KiB body limit) on a free port and sends
N pairs: a call the service refuses without needing its body (401 by default; `--kinds all`
cycles through 401, chunked 401, 404, 405, 415, 413, chunked 413 and a 413 past the
drain cap), then `GET /healthz` on the same connection the moment the refusal is read.
Prints the answered and lost second calls per kind; exit status 1 when any is lost.

    .venv/bin/python bench/keepalive_pairs.py [--pairs 1000] [--kinds 401|all] [--pipelined]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.*

from tests.keepalive_pairs import MAX_BODY, refusals, run_pairs, server_env, token  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--kinds", default="401", help="a refusal name, or 'all'")
    parser.add_argument("--parallel", type=int, default=40, help="connections at a time")
    parser.add_argument("--pipelined", action="store_true",
                        help="send both calls in one write (HTTP/1.1 pipelining)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    table = refusals(MAX_BODY, token)
    kinds = list(table.values()) if args.kinds == "all" else [table[args.kinds]]
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
        env=server_env(Path(tmp)), workers=args.workers
    ) as server:
        started = time.monotonic()
        outcome = run_pairs(server.port, kinds, pairs=args.pairs, parallel=args.parallel,
                            pipelined=args.pipelined)
        elapsed = time.monotonic() - started
    for kind in kinds:
        print(f"{kind.name:>14}: answered {outcome.answered[kind.name]:5d}  "
              f"lost {outcome.lost[kind.name]:5d}")
    for line in outcome.wrong[:10]:
        print("unexpected:", line)
    print(f"pairs {args.pairs}  lost {outcome.lost_total}  unexpected {len(outcome.wrong)}  "
          f"({elapsed:.1f} s{', pipelined' if args.pipelined else ''})")
    return 1 if outcome.lost_total or outcome.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
