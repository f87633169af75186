"""The store against SQLite and against the real PostgreSQL at 127.0.0.1:5432 (database test).

Each PostgreSQL test creates its own schema and drops it afterwards, so runs never collide.
PostgreSQL being unreachable is a failure with a printed reason, not a skip: CI has it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from cds_service.store import Store, normalise_url

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'nested' / 'store.sqlite3'}")
        s.migrate()
        yield s
        s.dispose()
        return
    s = Store(request.getfixturevalue("pg_url"))
    try:
        s.migrate()
        yield s
    finally:
        s.dispose()


def accepted(card="card-1", suggestion="s-1", ts="2026-11-25T10:00:00Z"):
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": ts,
    }


def overridden(card="card-1", code="not-relevant", comment="Mrs Smith declined"):
    return {
        "card": card,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-25T10:00:00Z",
        "overrideReason": {
            "reason": {"system": "urn:vitd-cds:override", "code": code},
            "userComment": comment,
        },
    }


def card(uuid_="card-1", topic="vitd-deficiency", indicator="warning"):
    return {
        "uuid": uuid_,
        "summary": "Vitamin D deficiency: 12 ng/mL",
        "indicator": indicator,
        "source": {"label": "x", "topic": {"system": "urn:vitd-cds:topic", "code": topic}},
    }


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/x.sqlite3", "sqlite:///var/x.sqlite3"),
    ],
)
def test_normalise_url(url, expected):
    assert normalise_url(url) == expected


def _head_revision() -> str:
    from importlib import resources

    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(resources.files("cds_service").joinpath("migrations")))
    (head,) = scripts.get_heads()  # one line of migrations, no branches
    return head


def test_migrate_twice_is_a_no_op(store):
    store.migrate()
    with store.engine.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            == _head_revision()
            == "0004"
        )
    assert store.ping() is True


def test_sqlite_runs_wal_without_an_fsync_per_commit(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        with s.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # 1 = NORMAL (2 = FULL, the default, syncs on every commit)
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert s.engine.pool._pre_ping is False  # a file: nothing to ping before each use
    finally:
        s.dispose()


def test_ping_is_false_for_an_unreachable_database():
    s = Store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")
    try:
        assert s.ping() is False
    finally:
        s.dispose()


def test_issued_cards_keep_topic_and_indicator_but_no_text(store):
    store.record_cards(
        "vitamin-d-patient-view",
        [card(), card("card-2", "k2-consideration", "info")],
        issued_at=NOW,
    )
    store.record_cards("vitamin-d-patient-view", [card()], issued_at=NOW)  # repeat: ignored
    with store.engine.connect() as connection:
        rows = (
            connection.execute(sa.text("SELECT * FROM issued_card ORDER BY card_uuid"))
            .mappings()
            .all()
        )
    assert [(r["card_uuid"], r["topic"], r["indicator"]) for r in rows] == [
        ("card-1", "vitd-deficiency", "warning"),
        ("card-2", "k2-consideration", "info"),
    ]
    assert "summary" not in rows[0] and all(
        "12 ng/mL" not in str(v) for r in rows for v in r.values()
    )


def test_feedback_is_stored_once_per_distinct_item(store):
    assert store.save_feedback("svc", [accepted(), accepted()], received_at=NOW) == 1
    assert store.save_feedback("svc", [accepted()], received_at=NOW) == 0
    assert store.save_feedback("svc", [overridden()], received_at=NOW) == 1  # other outcome
    assert store.save_feedback("svc", [accepted(suggestion="s-2")], received_at=NOW) == 1
    assert store.save_feedback("other-svc", [accepted()], received_at=NOW) == 1
    assert len(store.feedback_for_card("card-1")) == 4


def test_feedback_rows_carry_topic_reason_and_no_comment(store):
    store.record_cards("svc", [card()], issued_at=NOW)
    store.save_feedback("svc", [overridden(), accepted()], received_at=NOW)
    store.save_feedback("svc", [accepted(card="unknown-card")], received_at=NOW)
    first, second = store.feedback_for_card("card-1")
    assert first["topic"] == "vitd-deficiency" and first["override_reason_code"] == "not-relevant"
    assert first["override_reason_system"] == "urn:vitd-cds:override"
    assert second["accepted_suggestion_ids"] == '["s-1"]'
    assert first["received_at"] == NOW
    assert all("Mrs Smith" not in str(v) for v in first.values())
    assert store.feedback_for_card("unknown-card")[0]["topic"] is None


def test_a_database_error_rolls_back_the_batch(store):
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths; the next test covers its rollback")
    too_long = accepted(card="x" * 500)  # card_uuid is at most 128 characters
    with pytest.raises(sa.exc.DataError):
        store.save_feedback("svc", [accepted(card="good"), too_long], received_at=NOW)
    assert store.feedback_for_card("good") == []


def test_a_failing_batch_stores_nothing_on_any_dialect(store, monkeypatch):
    from cds_service import store as store_module

    calls = {"n": 0}
    real = store_module.item_hash

    def flaky(service_id, item):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("second item breaks")
        return real(service_id, item)

    monkeypatch.setattr(store_module, "item_hash", flaky)
    with pytest.raises(RuntimeError):
        store.save_feedback("svc", [accepted(card="a"), accepted(card="b")], received_at=NOW)
    monkeypatch.setattr(store_module, "item_hash", real)
    assert store.feedback_for_card("a") == [] and store.feedback_for_card("b") == []


def test_concurrent_saves_of_one_item_store_one_row(store):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def save():
        try:
            barrier.wait()
            results.append(store.save_feedback("svc", [accepted()], received_at=NOW))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(results) == [0, 0, 0, 1]
    assert len(store.feedback_for_card("card-1")) == 1
