"""Both workers busy under a few long-lived keep-alive connections (issue 19, item 1).

Against `cds-service serve` (real gunicorn, 2 workers): each kept-alive connection is answered
at most `MAX_REQUESTS_PER_CONNECTION` times, the last answer saying `Connection: close`, and
no call is lost; reconnected clients land on both workers.
"""

from __future__ import annotations

import http.client
import threading
from pathlib import Path

import pytest

from cds_service.gunicorn_worker import MAX_REQUESTS_PER_CONNECTION

from .keepalive_pairs import server_env
from .server_process import ServerProcess

CONNECTIONS = 8
CALLS = MAX_REQUESTS_PER_CONNECTION * 3 + 7  # per client: three full connections and a part


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _client(port: int, runs: list[int], statuses: list[int]) -> None:
    """CALLS discovery calls, reconnecting when told to close; records answers per connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    served = 0
    for _ in range(CALLS):
        conn.request("GET", "/cds-services")
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
        served += 1
        if (resp.getheader("Connection") or "").lower() == "close":
            runs.append(served)
            served = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    runs.append(served)
    conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(env=server_env(tmp_path_factory.mktemp("spread")), workers=2) as srv:
        yield srv


def _run_clients(port: int) -> tuple[list[list[int]], list[int]]:
    runs: list[list[int]] = [[] for _ in range(CONNECTIONS)]
    statuses: list[int] = []
    threads = [threading.Thread(target=_client, args=(port, runs[i], statuses))
               for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs, statuses


@pytest.mark.slow
def test_kept_alive_connections_are_bounded_and_no_call_is_lost(server):
    runs, statuses = _run_clients(server.port)
    assert len(statuses) == CONNECTIONS * CALLS
    assert set(statuses) == {200}
    for client_runs in runs:  # each connection closed after exactly the bound, the rest open
        assert client_runs == [MAX_REQUESTS_PER_CONNECTION] * 3 + [7]


@pytest.mark.slow
def test_both_workers_serve_calls_under_keep_alive_connections(server):
    pids = server.worker_pids()
    assert len(pids) == 2
    before = {pid: _cpu_ticks(pid) for pid in pids}
    _run_clients(server.port)
    spent = {pid: _cpu_ticks(pid) - before[pid] for pid in pids}
    total = sum(spent.values())
    assert total > 0
    for pid in pids:  # each worker did a real share of the work (not one core idling)
        assert spent[pid] / total >= 0.15, spent
