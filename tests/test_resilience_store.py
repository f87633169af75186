"""Bounded waits on the stores (contract §6), with the real PostgreSQL and Redis behind
`FaultProxy` (cut, blackhole, slow).

A blackholed proxy never answers until it is healed, so a request that comes back while it is
still blackholed proves that the wait was bounded; no test asserts a latency. The liveness
guard `within` only turns a hang into a failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from cds_service.store import Store, StoreLimits, StoreUnavailable, issued_card

from .builders import full_record, hook_request
from .fault_proxy import FaultProxy
from .jwt_helpers import signer

pytestmark = pytest.mark.postgres

SERVICE = "vitamin-d-patient-view"
URL = f"/cds-services/{SERVICE}"
LIMITS = dict(db_connect_timeout_s=1.0, db_statement_timeout_s=0.5, db_pool_timeout_s=0.2)
GUARD_S = 30.0  # far beyond every limit here; only a hang reaches it


def within(fn, guard_s: float = GUARD_S):
    """Run `fn` on a thread; its result, or a failure if it is still running after `guard_s`."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(guard_s)
    assert box, f"still waiting after {guard_s} s: the wait is not bounded"
    return box[0]


@pytest.fixture
def db_proxy():
    with FaultProxy(5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_pg_url(pg_url, db_proxy):
    return pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{db_proxy.port}")


@pytest.fixture
def pg_app(make_app, settings, proxied_pg_url):
    return make_app(
        settings.with_overrides(
            database_url=proxied_pg_url, record_cards_in_background=True, **LIMITS
        )
    )


def feedback_item(card: str) -> dict:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {"reason": {"system": "urn:x", "code": "not-relevant"}},
        "outcomeTimestamp": "2026-12-04T08:00:00Z",
    }


def post(client, url, body, **kw):
    return client.post(url, data=json.dumps(body), content_type="application/json", **kw)


@pytest.mark.parametrize("fault", ["blackhole", "cut", "slow"])
def test_feedback_is_503_with_retry_after_while_the_database_is_away(
    pg_app, db_proxy, fault, caplog
):
    client = pg_app.test_client()
    assert post(client, f"{URL}/feedback", {"feedback": [feedback_item("c-0")]}).status_code == 200
    db_proxy.set(fault, delay_s=5.0)
    caplog.set_level(logging.WARNING, logger="cds_service.api")
    reply = within(lambda: post(client, f"{URL}/feedback", {"feedback": [feedback_item("c-1")]}))
    assert reply.status_code == 503
    assert reply.headers["Retry-After"].isdigit()
    assert reply.get_json() == {"error": "feedback store unavailable, retry later"}
    # logged with its cause: the exception type (and message), no traceback
    causes = [r.cause for r in caplog.records if r.getMessage() == "could not store feedback"]
    assert causes and all(c.split(":")[0] in {"StoreUnavailable", "OperationalError"} for c in causes)
    assert not any(r.exc_info for r in caplog.records)


def test_feedback_is_stored_again_once_the_database_is_back(pg_app, db_proxy):
    client = pg_app.test_client()
    db_proxy.set("blackhole")
    assert within(lambda: post(client, f"{URL}/feedback", {"feedback": [feedback_item("c-1")]})).status_code == 503
    db_proxy.set("pass")
    deadline = time.monotonic() + GUARD_S
    while (status := post(client, f"{URL}/feedback", {"feedback": [feedback_item("c-2")]}).status_code) != 200:
        assert status == 503 and time.monotonic() < deadline
        time.sleep(0.2)
    assert pg_app.extensions["vitd.runtime"].store.feedback_for_card("c-2")


def test_hook_calls_answer_with_cards_while_the_database_is_blackholed_and_the_records_follow(
    pg_app, db_proxy
):
    """Decision support does not wait for the store; the issued-card rows stay queued and are
    written when it is back, so feedback on those cards still finds their topic."""
    client = pg_app.test_client()
    store = pg_app.extensions["vitd.runtime"].store
    db_proxy.set("blackhole")
    replies = [
        within(lambda: post(client, URL, hook_request(prefetch=full_record()))) for _ in range(3)
    ]
    assert all(r.status_code == 200 for r in replies)
    cards = [c for r in replies for c in r.get_json()["cards"]]
    assert cards, "the full record should give cards"
    time.sleep(0.5)  # a few writer ticks fail while the database is away
    db_proxy.set("pass")
    wanted = {c["uuid"] for c in cards}
    deadline = time.monotonic() + GUARD_S
    while True:
        try:
            with store.engine.connect() as connection:
                rows = connection.execute(sa.select(issued_card.c.card_uuid)).scalars().all()
        except sa.exc.OperationalError:
            rows = []
        if wanted <= set(rows):
            break
        assert time.monotonic() < deadline, "queued issued-card rows were never written"
        time.sleep(0.2)
    card = cards[0]
    reply = post(client, f"{URL}/feedback", {"feedback": [feedback_item(card["uuid"])]})
    assert reply.status_code == 200
    assert store.feedback_for_card(card["uuid"])[0]["topic"] == card["source"]["topic"]["code"]


def test_readyz_answers_503_from_the_background_check_and_200_again(pg_app, db_proxy):
    client = pg_app.test_client()
    assert client.get("/readyz").status_code == 200
    db_proxy.set("blackhole")
    deadline = time.monotonic() + GUARD_S
    while (reply := within(lambda: client.get("/readyz"))).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert reply.status_code == 503
    assert reply.get_json()["details"] == ["database"]
    assert "Retry-After" in reply.headers
    assert within(lambda: client.get("/healthz")).status_code == 200
    db_proxy.set("pass")
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_waiting_callers_are_capped_and_the_next_one_is_refused(proxied_pg_url, db_proxy):
    store = Store(proxied_pg_url, StoreLimits(statement_timeout_s=30, max_waiters=2))
    store.migrate()
    try:
        db_proxy.set("blackhole")
        now = datetime.now(UTC)
        def wait_for_store(n: int) -> None:
            try:
                store.save_feedback("s", [feedback_item(f"w-{n}")], received_at=now)
            except (StoreUnavailable, sa.exc.OperationalError):
                pass  # refused or answered when healed: either way no longer waiting

        waiting = [threading.Thread(target=wait_for_store, args=(n,), daemon=True) for n in (1, 2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + GUARD_S
        while store._gate._slots._value > 0:  # both callers hold a slot
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(StoreUnavailable) as refused:
            store.save_feedback("s", [feedback_item("third")], received_at=now)
        assert refused.value.reason == "too many waiting"
    finally:
        db_proxy.set("pass")
        for thread in waiting:
            thread.join(GUARD_S)
        store.dispose()


def test_database_replay_store_away_is_503_with_retry_after(make_app, auth_settings, proxied_pg_url, db_proxy):
    """Auth with the database as the replay store needs the database: a prompt 503."""
    app = make_app(auth_settings.with_overrides(database_url=proxied_pg_url, **LIMITS))
    db_proxy.set("blackhole")
    reply = within(
        lambda: post(
            app.test_client(), URL, hook_request(prefetch=full_record()),
            headers={"Authorization": f"Bearer {signer().sign()}"},
        )
    )
    assert reply.status_code == 503 and "Retry-After" in reply.headers


@pytest.mark.parametrize("fault", ["blackhole", "cut"])
def test_redis_replay_store_away_is_503_and_readyz_says_so(make_app, auth_settings, fault):
    with FaultProxy(6379) as proxy:
        app = make_app(
            auth_settings.with_overrides(
                redis_url=f"redis://127.0.0.1:{proxy.port}/0", redis_timeout_s=0.3
            )
        )
        client = app.test_client()

        def call():
            token = signer().sign()
            return post(client, URL, hook_request(prefetch=full_record()),
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip

        try:
            assert call().status_code == 200
            assert client.get("/readyz").status_code == 200
            proxy.set(fault)
            reply = within(call)
            assert reply.status_code == 503 and "Retry-After" in reply.headers
            deadline = time.monotonic() + GUARD_S
            while (ready := within(lambda: client.get("/readyz"))).status_code == 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert ready.get_json()["details"] == ["replay store"]
            proxy.set("pass")
            while call().status_code != 200 or client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "did not recover from the Redis outage"
                time.sleep(0.1)
        finally:
            proxy.set("pass")
            app.extensions["vitd.auth"].replay.close()


def test_issued_card_rows_wait_in_a_bounded_queue_and_overflow_is_counted(tmp_path, monkeypatch):
    from cds_service.metrics import Metrics

    store = Store(f"sqlite:///{tmp_path / 's.sqlite3'}", StoreLimits(card_queue_rows=3))
    store.migrate()
    away = threading.Event()
    away.set()
    write = store.write_card_rows

    def write_unless_away(rows):
        if away.is_set():
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is away"))
        write(rows)

    monkeypatch.setattr(store, "write_card_rows", write_unless_away)
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    store.record_in_background(interval_s=0.02, observe=metrics.observe_card_queue)
    try:
        cards = [
            {"uuid": f"u-{n}", "indicator": "info", "source": {"topic": {"code": "vitd-deficiency"}}}
            for n in range(5)
        ]
        store.record_cards(SERVICE, cards, issued_at=datetime.now(UTC))
        deadline = time.monotonic() + GUARD_S
        labels = {"store": "database"}
        while sample("vitd_cds_issued_cards_dropped_total", labels) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sample("vitd_cds_issued_cards_queued", labels) == 3
        away.clear()
        while sample("vitd_cds_issued_cards_queued", labels) != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with store.engine.connect() as connection:
            rows = connection.execute(sa.select(issued_card.c.card_uuid)).scalars().all()
        assert sorted(rows) == ["u-0", "u-1", "u-2"]  # the oldest kept, the overflow dropped
    finally:
        store.dispose()


def test_in_process_hook_calls_answer_and_log_the_cause_when_records_cannot_be_written(
    make_app, settings, proxied_pg_url, db_proxy, caplog
):
    """Without the background recorder (tests, `cds-service invoke`) the record is written
    during the call, within the limits: the cards still go out."""
    app = make_app(settings.with_overrides(database_url=proxied_pg_url, **LIMITS))
    db_proxy.set("blackhole")
    caplog.set_level(logging.WARNING, logger="cds_service.engine")
    reply = within(lambda: post(app.test_client(), URL, hook_request(prefetch=full_record())))
    assert reply.status_code == 200 and reply.get_json()["cards"]
    causes = [r.cause for r in caplog.records if r.getMessage() == "could not record issued cards"]
    # the snooze look-up before it (patient-view) may already have timed out: then the record
    # is refused at once in the gate's cool-down ("recent timeout"), which is the point
    assert len(causes) == 1 and causes[0].startswith("StoreUnavailable: "), causes


def test_readiness_names_failing_stores_and_distrusts_a_stalled_check():
    from cds_service.readiness import Readiness

    def refused():
        raise ConnectionRefusedError("refused")

    readiness = Readiness(
        {"database": lambda: None, "replay store": refused}, interval_s=3600, stale_s=0.2
    )
    readiness.start()  # checks once, then sleeps: the test drives the rest
    assert readiness._first.wait(GUARD_S)
    assert readiness.state() == (False, ("replay store",))
    readiness._checks["replay store"] = lambda: None
    readiness.check_once()
    assert readiness.state() == (True, ())
    readiness._checked_at -= 1.0  # the background check has not finished for a while
    assert readiness.state() == (False, ("readiness check stalled",))
    readiness.close()


def test_records_still_queued_at_exit_are_counted_as_dropped(tmp_path, monkeypatch, caplog):
    from cds_service.metrics import Metrics

    store = Store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    store.migrate()

    def away(rows):
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is away"))

    monkeypatch.setattr(store, "write_card_rows", away)
    metrics = Metrics()
    store.record_in_background(interval_s=3600, observe=metrics.observe_card_queue)
    cards = [{"uuid": f"u-{n}", "indicator": "info"} for n in range(3)]
    store.record_cards(SERVICE, cards, issued_at=datetime.now(UTC))
    with caplog.at_level(logging.WARNING, logger="cds_service.store"):
        store.dispose()
    labels = {"store": "database"}
    assert metrics.registry.get_sample_value("vitd_cds_issued_cards_dropped_total", labels) == 3
    assert metrics.registry.get_sample_value("vitd_cds_issued_cards_queued", labels) == 0
    assert any(getattr(r, "lost", None) == 3 for r in caplog.records)


def test_history_page_loads_go_through_the_store_gate_while_the_database_is_blackholed(
    make_app, settings, proxied_pg_url, db_proxy, caplog
):
    """The SMART history page reads its server-side session through the same gate as the hook
    calls' store calls: while the database is blackholed, one page load waits at most the
    store's wait, and the loads after it, within the cool-down, are refused at once ("recent
    timeout") instead of each holding a request thread for the driver's own time-outs."""
    from cds_service.history.web import HISTORY_PATH, SESSION_FIELD

    app = make_app(
        settings.with_overrides(
            database_url=proxied_pg_url,
            smart_client_id="vitd-history",
            secret_key="s" * 48,
            public_base_url="http://127.0.0.1:9",
            smart_allowed_issuers=("http://127.0.0.1:8081/fhir",),
            **LIMITS,
        )
    )
    key = app.extensions["vitd.smart_sessions"].create(
        {"iss": "http://127.0.0.1:8081/fhir", "access_token": "t", "patient": "p1"},
        now=datetime.now(UTC),
    )
    client = app.test_client()
    with client.session_transaction() as browser:
        browser[SESSION_FIELD] = key
    db_proxy.set("blackhole")
    caplog.set_level(logging.ERROR, logger="cds_service.history.web")
    pages = [within(lambda: client.get(HISTORY_PATH)) for _ in range(3)]
    assert [p.status_code for p in pages] == [503, 503, 503]
    assert all("service unavailable" in p.get_data(as_text=True) for p in pages)
    causes = [r.getMessage() for r in caplog.records if "session store unavailable" in r.getMessage()]
    assert causes[0].endswith("(timeout)"), causes
    assert all(c.endswith("(recent timeout)") for c in causes[1:]) and len(causes) == 3, causes
