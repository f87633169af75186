"""Under gunicorn (`cds-service serve`), with the database behind `FaultProxy`: a blackholed
database holds at most its share of the request threads, and a call that waited for a thread
past its time budget is refused (the budget counts from arrival)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from .builders import full_record, hook_request
from .fault_proxy import FaultProxy
from .server_process import ServerProcess

pytestmark = pytest.mark.slow

URL = "/cds-services/vitamin-d-patient-view"
GUARD_S = 30.0


def feedback(card: str) -> dict:
    return {"feedback": [{"card": card, "outcome": "overridden",
                          "outcomeTimestamp": "2026-12-04T08:00:00Z"}]}  # fmt: skip


def post(base: str, path: str, body: dict) -> requests.Response:
    return requests.post(base + path, data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=GUARD_S)  # fmt: skip


@pytest.fixture
def proxied(pg_url):
    with FaultProxy(5432) as proxy:
        yield proxy, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def serving(database_url: str, threads: int, **env: str) -> ServerProcess:
    return ServerProcess(
        env={"CDS_AUTH_DISABLED": "1", "DATABASE_URL": database_url, **env},
        workers=1, threads=threads,
    )  # fmt: skip


@pytest.mark.postgres
def test_a_blackholed_database_leaves_threads_for_hook_calls_and_healthz(proxied):
    proxy, url = proxied
    with serving(url, threads=8) as server:
        base = server.base_url
        assert post(base, f"{URL}/feedback", feedback("before")).status_code == 200
        proxy.set("blackhole")
        replies: list = []
        posters = [
            threading.Thread(
                target=lambda n=n: replies.append(post(base, f"{URL}/feedback", feedback(f"f{n}")))
            )
            for n in range(8)
        ]
        for poster in posters:
            poster.start()
        # while the feedback posts wait for the database, the rest still answer
        assert requests.get(base + "/healthz", timeout=GUARD_S).status_code == 200
        call = post(base, URL, hook_request(prefetch=full_record()))
        assert call.status_code == 200 and call.json()["cards"]
        assert requests.get(base + "/readyz", timeout=GUARD_S).status_code in (200, 503)
        for poster in posters:
            poster.join(GUARD_S)
        assert [r.status_code for r in replies] == [503] * 8
        assert all(r.headers.get("Retry-After") for r in replies)
        proxy.set("pass")
    assert "Traceback" not in server.output


def test_a_call_that_waited_past_its_budget_for_a_thread_is_refused(tmp_path):
    """One thread, held by a caller that sends its body slowly; a call queued behind it for
    longer than its budget is refused unstarted, and the next one is served."""
    database = f"sqlite:///{tmp_path / 's.sqlite3'}"
    with serving(database, threads=1, CDS_FHIR_BUDGET_S="1") as server:
        base = server.base_url
        body = json.dumps(feedback("slow-upload")).encode()
        head = (f"POST {URL}/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=GUARD_S) as slow:
            slow.sendall(head.encode() + body[:10])  # the only thread now reads this body
            time.sleep(0.3)
            late: list = []
            queued = threading.Thread(
                target=lambda: late.append(post(base, URL, hook_request(prefetch=full_record())))
            )
            queued.start()
            time.sleep(1.5)  # longer than the budget, while the call waits for the thread
            slow.sendall(body[10:])
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")
            queued.join(GUARD_S)
        assert late and late[0].status_code == 503 and late[0].headers.get("Retry-After")
        assert "time budget" in late[0].json()["details"][0]
        assert post(base, URL, hook_request(prefetch=full_record())).status_code == 200
