"""Under gunicorn (`cds-service serve`), with the database behind `FaultProxy`: a blackholed
database holds at most its share of the request threads, and a call that waited for a thread
past its time budget is refused (the budget counts from arrival)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from .builders import full_record, hook_request
from .fault_proxy import FaultProxy
from .server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

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


def test_a_call_that_waited_past_its_budget_for_a_thread_is_refused(proxied):
    proxy, url = proxied
    with serving(url, threads=1, CDS_FHIR_BUDGET_S="1") as server:
        base = server.base_url
        accepted = proxy.accepted
        proxy.set("blackhole")  # the worker's first database connection hangs
        holder = threading.Thread(target=lambda: post(base, f"{URL}/feedback", feedback("x")))
        holder.start()
        deadline = time.monotonic() + GUARD_S
        while proxy.accepted == accepted:  # the only thread now waits on the database
            assert time.monotonic() < deadline
            time.sleep(0.01)
        late = post(base, URL, hook_request(prefetch=full_record()))
        assert late.status_code == 503 and late.headers.get("Retry-After")
        assert "time budget" in late.json()["details"][0]
        holder.join(GUARD_S)
        proxy.set("pass")
        assert post(base, URL, hook_request(prefetch=full_record())).status_code == 200
