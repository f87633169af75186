"""The durable store: cards issued and feedback on them (SQLAlchemy Core; Alembic migrations).

SQLite by default, PostgreSQL when `DATABASE_URL` says so. No patient data is stored: a card is
kept as uuid, service, topic, indicator and time; feedback as its outcome, override reason code
and accepted suggestion ids. The clinician's free-text `userComment` is NOT stored, because it
may name the patient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

log = logging.getLogger(__name__)

metadata = sa.MetaData()

issued_card = sa.Table(
    "issued_card",
    metadata,
    sa.Column("card_uuid", sa.String(64), primary_key=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("topic", sa.String(64)),
    sa.Column("indicator", sa.String(16), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    # migration 0004: the client's name, a one-way patient key, NULL (shown) or why withheld
    sa.Column("client", sa.String(128)),
    sa.Column("patient_key", sa.String(64)),
    sa.Column("disposition", sa.String(16)),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("card_uuid", sa.String(128), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("override_reason_system", sa.String(1024)),
    sa.Column("override_reason_code", sa.String(256)),
    sa.Column("accepted_suggestion_ids", sa.Text),
    sa.Column("outcome_timestamp", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

# JWT ids already accepted (auth.py): one row per (issuer, jti) digest until the token expires.
# The primary key makes "first one wins" atomic across every worker sharing the database.
jwt_replay = sa.Table(
    "jwt_replay",
    metadata,
    sa.Column("token_digest", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

# Patient-view topics put off by an `overridden` feedback with a snooze reason (contract §7).
snooze = sa.Table(
    "snooze",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # (client, patient, topic)
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("client", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
)

# Cards shown at order-select, for the de-duplication at order-sign (contract §7).
shown_card = sa.Table(
    "shown_card",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # (client, patient, user, card)
    sa.Column("drafts", sa.Text, nullable=False),  # JSON list of the selected drafts' digests
    sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
)

# Roll-ups for the analytics report (analytics.py), kept in the transaction that writes the
# cards or the feedback they count: a year of a hospital reports without reading its rows.
card_rollup = sa.Table(
    "card_rollup",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("topic", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(128), primary_key=True),
    sa.Column("disposition", sa.String(16), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
card_patient = sa.Table(
    "card_patient",
    metadata,
    sa.Column("topic", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(128), primary_key=True),
    sa.Column("patient_key", sa.String(64), primary_key=True),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
)
feedback_rollup = sa.Table(
    "feedback_rollup",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("topic", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(128), primary_key=True),
    sa.Column("outcome", sa.String(16), primary_key=True),
    sa.Column("reason", sa.String(256), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

PURGE_EVERY = 256  # accepted tokens between two deletions of expired replay rows
_REMEMBER_SQL = (
    "INSERT INTO jwt_replay (token_digest, expires_at) VALUES (?, ?) "
    "ON CONFLICT (token_digest) DO NOTHING"
)


@dataclass(frozen=True)
class StoreLimits:
    """Time limits and caps on every database call (contract §6 "Bounded waits everywhere").

    A request thread waits for one store call at most `wait_s` (pool wait + connect +
    statement); PostgreSQL also enforces `statement_timeout` itself and drops a dead peer by
    TCP keepalive and `tcp_user_timeout`. At most `max_waiters` calls per process are in
    flight at once; the next one waits at most `pool_timeout_s` for a slot, then is refused,
    and calls in the `cooldown_s` after a time-out are refused at once, so a dead store costs
    a caller milliseconds, not seconds.
    """

    connect_timeout_s: float = 2.0
    statement_timeout_s: float = 2.0
    pool_timeout_s: float = 0.5
    max_waiters: int = 4
    cooldown_s: float = 1.0
    card_queue_rows: int = 50_000  # issued-card rows kept in memory while the store is away

    @property
    def wait_s(self) -> float:
        return self.pool_timeout_s + self.connect_timeout_s + self.statement_timeout_s


# Snooze and de-duplication look-ups run on the hook path: a store that does not answer within
# this costs a hook call no more, and the card is shown (a repeat beats no decision support).
HOOK_LOOKUP_WAIT_S = 0.5


class StoreUnavailable(Exception):
    """The store did not answer within its limits, or too many calls already wait for it.
    `reason` is a short fixed phrase (logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Gate:
    """Runs store calls for request threads with a bounded wait and a cap on callers.

    Over the network (PostgreSQL) the call runs on the gate's own threads and the caller
    waits at most `wait_s`: a blackholed connection, whose reads no client-side option of
    libpq bounds, then holds a gate thread, never a request thread. A local SQLite file runs
    inline (its busy timeout is the statement limit), so the hot path keeps no thread hop.
    """

    def __init__(self, limits: StoreLimits, *, inline: bool) -> None:
        self._limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_waiters)
        self._executor = None if inline else ThreadPoolExecutor(
            max_workers=limits.max_waiters, thread_name_prefix="store-io"
        )
        self._cool_until = 0.0

    def run(self, fn: Callable[..., Any], *args: Any, wait_s: float | None = None) -> Any:
        if time.monotonic() < self._cool_until:
            raise StoreUnavailable("recent timeout")
        # a healthy store frees a slot in milliseconds: wait for one as long as for a pooled
        # connection; a dead one holds them all (and the cooldown refuses before this)
        if not self._slots.acquire(timeout=self._limits.pool_timeout_s):
            raise StoreUnavailable("too many waiting")
        if self._executor is None:
            try:
                return fn(*args)
            finally:
                self._slots.release()
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            self._slots.release()
            raise StoreUnavailable("closed") from None
        future.add_done_callback(lambda _f: self._slots.release())
        try:
            return future.result(timeout=self._limits.wait_s if wait_s is None else wait_s)
        except FutureTimeout:
            future.cancel()
            self._cool_until = time.monotonic() + self._limits.cooldown_s
            raise StoreUnavailable("timeout") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _postgres_connect_args(limits: StoreLimits) -> dict[str, Any]:
    """libpq parameters: connect timeout (whole seconds, at least 2), TCP keepalive and
    `tcp_user_timeout`, so a connection to a vanished server fails instead of hanging."""
    dead_peer_ms = int(1000 * (limits.connect_timeout_s + limits.statement_timeout_s))
    return {
        "connect_timeout": max(2, math.ceil(limits.connect_timeout_s)),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": dead_peer_ms,
    }


def _statement_timeout(limits: StoreLimits) -> Callable[[Any, Any], None]:
    milliseconds = max(1, int(limits.statement_timeout_s * 1000))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A session setting (not a startup `options`, which the URL may already use).
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {milliseconds}")
        dbapi_connection.commit()

    return on_connect


def describe_error(exc: BaseException) -> str:
    """`Type: first line of the message`, for logs: the cause without a traceback. Driver
    messages name hosts, ports and SQL states, never our rows (we bind no patient data)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever scheme spelling the environment gives."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def patient_key(patient_id: str) -> str:
    """A one-way key of a patient id: the store counts and snoozes by it, never the id."""
    return hashlib.sha256(f"vitd-cds patient\x00{patient_id}".encode()).hexdigest()


def snooze_key(client: str, patient_key: str, topic: str) -> str:
    return hashlib.sha256(f"{client}\x00{patient_key}\x00{topic}".encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    """SQLite keeps no zone: values were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def item_hash(service_id: str, item: Mapping[str, Any]) -> str:
    """Identity of one feedback item: the same item sent twice hashes the same."""
    canonical = json.dumps([service_id, item], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Store:
    def __init__(self, url: str, limits: StoreLimits | None = None) -> None:
        url = normalise_url(url)
        self.limits = limits = limits or StoreLimits()
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        parsed = sa.engine.make_url(url)
        # A file database: JWT ids go in through one plain sqlite3 connection per thread.
        self._sqlite_file: str | None = None
        self._busy_timeout_s = limits.statement_timeout_s
        if parsed.get_backend_name() == "sqlite":
            kwargs["pool_pre_ping"] = False  # a file: no server connection to go stale
            if parsed.database and parsed.database != ":memory:":
                self._sqlite_file = parsed.database
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                kwargs["pool_timeout"] = limits.pool_timeout_s  # a file: a QueuePool
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": self._busy_timeout_s,
            }
        elif parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = _postgres_connect_args(limits)
            kwargs["pool_timeout"] = limits.pool_timeout_s
        self.engine = sa.create_engine(url, **kwargs)
        self._local = threading.local()
        self._raw: list[sqlite3.Connection] = []
        self._accepted = 0
        self._recorder: _CardRecorder | None = None
        self._gate = _Gate(limits, inline=self.engine.dialect.name == "sqlite")
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", self._pragmas)
        elif self.engine.dialect.name == "postgresql":
            sa.event.listen(self.engine, "connect", _statement_timeout(limits))

    def _pragmas(self, dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record, busy_timeout_s=self._busy_timeout_s)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe on every start)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("cds_service").joinpath("migrations"))
        )
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":  # DDL may wait for a table lock
                connection.execute(sa.text("SET LOCAL statement_timeout = 60000"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def check(self, wait_s: float | None = None) -> None:
        """`SELECT 1` within the limits; raises the driver's error or `StoreUnavailable`."""
        self._gate.run(self._select_one, wait_s=wait_s)

    def bounded(self, fn: Callable[..., Any], *args: Any, wait_s: float | None = None) -> Any:
        """`fn(*args)` within the store's limits, counted among its waiting callers (the same
        gate as every store call): `StoreUnavailable` when it cannot be done in time."""
        return self._gate.run(fn, *args, wait_s=wait_s)

    def _select_one(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def ping(self, wait_s: float | None = None) -> bool:
        try:
            self.check(wait_s)
            return True
        except Exception as exc:
            log.warning("store unreachable", extra={"cause": describe_error(exc)})
            return False

    def _insert(self, table: sa.Table):
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return dialect_insert(table)

    def record_cards(
        self,
        service_id: str,
        cards: Sequence[Mapping],
        *,
        issued_at: datetime,
        client: str | None = None,
        patient_key: str | None = None,
        dispositions: Mapping[str, str] | None = None,
    ) -> None:
        """`dispositions`: card uuid -> why it was withheld (silent, suppressed, ...)."""
        withheld = dispositions or {}
        rows = [
            {
                "card_uuid": card["uuid"],
                "service_id": service_id,
                "topic": card.get("source", {}).get("topic", {}).get("code"),
                "indicator": card["indicator"],
                "issued_at": issued_at,
                "client": client,
                "patient_key": patient_key,
                "disposition": withheld.get(card["uuid"]),
            }
            for card in cards
        ]
        if self._recorder is not None:
            self._recorder.put(rows)
        else:  # in-process use (tests, `invoke`): written now, within the limits
            self._gate.run(self.write_card_rows, rows)

    def write_card_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as connection:
                connection.execute(self._insert(issued_card).on_conflict_do_nothing(), rows)
                self._roll_up_cards(connection, rows)

    def _roll_up_cards(self, connection: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add `rows` to `card_rollup` and `card_patient` (keys sorted: concurrent writers
        take row locks in one order)."""
        counts: dict[tuple[str, str, str, str], int] = {}
        patients: dict[tuple[str, str, str], datetime] = {}
        for row in rows:
            topic, client = row.get("topic") or "", row.get("client") or ""
            at = _utc(row["issued_at"]).astimezone(UTC)
            key = (at.date().isoformat(), topic, client, row.get("disposition") or "")
            counts[key] = counts.get(key, 0) + 1
            if row.get("patient_key") and not row.get("disposition"):
                pkey = (topic, client, row["patient_key"])
                patients[pkey] = max(at, patients.get(pkey, at))
        add = self._insert(card_rollup)
        add = add.on_conflict_do_update(
            index_elements=["day", "topic", "client", "disposition"],
            set_={"n": card_rollup.c.n + add.excluded.n},
        )
        connection.execute(
            add,
            [
                {"day": d, "topic": t, "client": c, "disposition": s, "n": n}
                for (d, t, c, s), n in sorted(counts.items())
            ],
        )
        if patients:
            seen = self._insert(card_patient)
            seen = seen.on_conflict_do_update(
                index_elements=["topic", "client", "patient_key"],
                set_={
                    "last_at": sa.case(
                        (card_patient.c.last_at > seen.excluded.last_at, card_patient.c.last_at),
                        else_=seen.excluded.last_at,
                    )
                },
            )
            connection.execute(
                seen,
                [
                    {"topic": t, "client": c, "patient_key": p, "last_at": at}
                    for (t, c, p), at in sorted(patients.items())
                ],
            )

    def _roll_up_feedback(
        self, connection: sa.Connection, new: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add newly stored feedback items on cards shown here to `feedback_rollup`, by the
        day their card was issued."""
        uuids = sorted({row["card_uuid"] for row in new})
        if not uuids:
            return
        query = sa.select(
            issued_card.c.card_uuid, issued_card.c.issued_at, issued_card.c.topic,
            issued_card.c.client,
        ).where(issued_card.c.card_uuid.in_(uuids), issued_card.c.disposition.is_(None))
        cards = {uuid: (at, t, c) for uuid, at, t, c in connection.execute(query)}
        counts: dict[tuple[str, str, str, str, str], int] = {}
        for row in new:
            if row["card_uuid"] not in cards:
                continue
            at, topic, client = cards[row["card_uuid"]]
            key = (
                _utc(at).astimezone(UTC).date().isoformat(),
                topic or "",
                client or "",
                row["outcome"],
                row.get("override_reason_code") or "",
            )
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            return
        add = self._insert(feedback_rollup)
        add = add.on_conflict_do_update(
            index_elements=["day", "topic", "client", "outcome", "reason"],
            set_={"n": feedback_rollup.c.n + add.excluded.n},
        )
        connection.execute(
            add,
            [
                {"day": d, "topic": t, "client": c, "outcome": o, "reason": r, "n": n}
                for (d, t, c, o, r), n in sorted(counts.items())
            ],
        )

    def record_in_background(
        self, *, interval_s: float = 0.2, observe: Callable[[int, int], None] | None = None
    ) -> None:
        """From now on `record_cards` only queues; one thread writes the queue in batches.

        Under load a commit per call (an fsync, and the wait for the GIL after it) was the
        largest cost of a call with cards. Issued-card records are analytics: a call never
        waits for them. While the store is away the rows stay queued (at most
        `limits.card_queue_rows`; beyond that new rows are dropped and counted) and are
        written when it is back. `observe(queued, dropped)` is told after every attempt
        (metrics). Start it in the process that serves (after a fork), stop it with
        `flush_and_stop` at exit; at most `interval_s` of records is lost if the process dies.
        """
        if self._recorder is None:
            self._recorder = _CardRecorder(
                self, interval_s, self.limits.card_queue_rows, observe=observe
            )

    def flush_and_stop(self) -> None:
        """Write what is queued and stop the background writer (no-op without one)."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.stop()

    def save_feedback(
        self, service_id: str, items: Sequence[Mapping], *, received_at: datetime
    ) -> int:
        """Store a batch in one transaction; an item already stored is skipped. Returns new rows."""
        return len(self.save_feedback_outcomes(service_id, items, received_at=received_at))

    def save_feedback_outcomes(
        self, service_id: str, items: Sequence[Mapping], *, received_at: datetime
    ) -> list[tuple[str | None, str]]:
        """`save_feedback`, returning (topic of the card or None, outcome) per newly stored item.

        The topic comes from `issued_card` (cards this store recorded), read in the same
        transaction; feedback on a card issued elsewhere has None. Bounded by the limits:
        `StoreUnavailable` when the store does not answer in time (the batch may still be
        written later; a retry of it is then stored once, items are idempotent).
        """
        return self._gate.run(self._save_feedback_outcomes, service_id, items, received_at)

    def _save_feedback_outcomes(
        self, service_id: str, items: Sequence[Mapping], received_at: datetime
    ) -> list[tuple[str | None, str]]:
        rows: dict[str, dict[str, Any]] = {}
        for item in items:
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            accepted = [s["id"] for s in item.get("acceptedSuggestions", [])]
            digest = item_hash(service_id, item)
            rows[digest] = {
                "item_hash": digest,
                "service_id": service_id,
                "card_uuid": item["card"],
                "outcome": item["outcome"],
                "override_reason_system": reason.get("system"),
                "override_reason_code": reason.get("code"),
                "accepted_suggestion_ids": json.dumps(accepted) if accepted else None,
                "outcome_timestamp": item["outcomeTimestamp"],
                "received_at": received_at,
            }
        new: list[dict[str, Any]] = []
        with self.engine.begin() as connection:
            statement = (
                self._insert(feedback)
                .on_conflict_do_nothing(index_elements=["item_hash"])
                .returning(feedback.c.id)
            )
            for row in rows.values():  # one by one: a returned id means the row is new
                if connection.execute(statement, row).all():
                    new.append(row)
            self._roll_up_feedback(connection, new)
            uuids = sorted({row["card_uuid"] for row in new})
            topics: dict[str, str | None] = {}
            if uuids:
                query = sa.select(issued_card.c.card_uuid, issued_card.c.topic).where(
                    issued_card.c.card_uuid.in_(uuids)
                )
                topics = {uuid: topic for uuid, topic in connection.execute(query)}
        return [(topics.get(row["card_uuid"]), row["outcome"]) for row in new]

    # --- snooze (contract §7) -----------------------------------------------------------------

    def snooze_from_feedback(
        self,
        service_id: str,
        items: Sequence[Mapping],
        *,
        received_at: datetime,
        days: Mapping[tuple[str, str], int],
        never: Callable[[str, str], bool],
    ) -> int:
        """See `_snooze_from_feedback`; within the store's limits (StoreUnavailable)."""
        return self._gate.run(
            self._snooze_from_feedback, service_id, items, received_at, days, never
        )

    def _snooze_from_feedback(
        self,
        service_id: str,
        items: Sequence[Mapping],
        received_at: datetime,
        days: Mapping[tuple[str, str], int],
        never: Callable[[str, str], bool],
    ) -> int:
        """Snooze the topic of each `overridden` item whose reason is a key of `days` (system,
        code), for the card's patient and client, until `received_at` + that many days.

        Only cards this store recorded as shown by `service_id` count; `never(topic,
        indicator)` names cards that are never snoozed. A repeat keeps the later end. Returns
        the number of items that set (or extended) a snooze.
        """
        wanted: dict[str, tuple[str, str]] = {}
        for item in items:
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            key = (reason.get("system"), reason.get("code"))
            if item.get("outcome") == "overridden" and key in days:
                wanted[item["card"]] = key  # type: ignore[assignment]
        if not wanted:
            return 0
        query = sa.select(
            issued_card.c.card_uuid,
            issued_card.c.topic,
            issued_card.c.indicator,
            issued_card.c.client,
            issued_card.c.patient_key,
        ).where(
            issued_card.c.card_uuid.in_(sorted(wanted)),
            issued_card.c.service_id == service_id,
            issued_card.c.disposition.is_(None),
            issued_card.c.patient_key.is_not(None),
        )
        count = 0
        with self.engine.begin() as connection:
            for uuid, topic, indicator, client, patient_key in connection.execute(query).all():
                if topic is None or never(topic, indicator):
                    continue
                reason = wanted[uuid]
                until = received_at + timedelta(days=days[reason])
                statement = self._insert(snooze).values(
                    key_hash=snooze_key(client or "", patient_key, topic),
                    topic=topic,
                    client=client or "",
                    reason=reason[1],
                    set_at=received_at,
                    until=until,
                )
                statement = statement.on_conflict_do_update(
                    index_elements=["key_hash"],
                    set_={
                        "reason": statement.excluded.reason,
                        "set_at": statement.excluded.set_at,
                        "until": sa.case(
                            (snooze.c.until > statement.excluded.until, snooze.c.until),
                            else_=statement.excluded.until,
                        ),
                    },
                )
                connection.execute(statement)
                count += 1
        return count

    def snoozes(
        self, client: str, patient_key: str, topics: Sequence[str], now: datetime
    ) -> dict[str, datetime]:
        """Topics snoozed now for this client and patient -> when the snooze was set. On the
        hook path: a short wait (HOOK_LOOKUP_WAIT_S), then StoreUnavailable."""
        return self._gate.run(
            self._snoozes, client, patient_key, topics, now, wait_s=HOOK_LOOKUP_WAIT_S
        )

    def _snoozes(
        self, client: str, patient_key: str, topics: Sequence[str], now: datetime
    ) -> dict[str, datetime]:
        keys = {snooze_key(client, patient_key, topic): topic for topic in topics}
        if not keys:
            return {}
        query = sa.select(snooze.c.key_hash, snooze.c.set_at, snooze.c.until).where(
            snooze.c.key_hash.in_(sorted(keys))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return {
            keys[key]: _utc(set_at) for key, set_at, until in rows if _utc(until) > now
        }

    # --- de-duplication at signing (contract §7) --------------------------------------------

    def remember_shown(
        self, shown: Mapping[str, Sequence[str]], *, shown_at: datetime, keep: timedelta
    ) -> None:
        """See `_remember_shown`; on the hook path, with a short wait."""
        self._gate.run(self._remember_shown, shown, shown_at, keep, wait_s=HOOK_LOOKUP_WAIT_S)

    def _remember_shown(
        self, shown: Mapping[str, Sequence[str]], shown_at: datetime, keep: timedelta
    ) -> None:
        """`shown`: key of (client, patient, user, card content) -> digests of its drafts.
        Every PURGE_EVERY calls, rows older than `keep` and ended snoozes are deleted."""
        if not shown:
            return
        self._shown_calls = getattr(self, "_shown_calls", 0) + 1
        if self._shown_calls % PURGE_EVERY == 0:
            self.purge_living(shown_at, keep)
        statement = self._insert(shown_card)
        statement = statement.on_conflict_do_update(
            index_elements=["key_hash"],
            set_={"drafts": statement.excluded.drafts, "shown_at": statement.excluded.shown_at},
        )
        rows = [
            {"key_hash": key, "drafts": json.dumps(sorted(drafts)), "shown_at": shown_at}
            for key, drafts in shown.items()
        ]
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def purge_living(self, now: datetime, keep: timedelta) -> tuple[int, int]:
        """Forget shown cards older than `keep` and snoozes that ended: (shown, snoozes)."""
        with self.engine.begin() as connection:
            shown = connection.execute(
                sa.delete(shown_card).where(shown_card.c.shown_at < now - keep)
            ).rowcount
            ended = connection.execute(sa.delete(snooze).where(snooze.c.until <= now)).rowcount
        return shown, ended

    def shown_since(self, keys: Sequence[str], since: datetime) -> dict[str, frozenset[str]]:
        """See `_shown_since`; on the hook path, with a short wait."""
        return self._gate.run(self._shown_since, keys, since, wait_s=HOOK_LOOKUP_WAIT_S)

    def _shown_since(self, keys: Sequence[str], since: datetime) -> dict[str, frozenset[str]]:
        """Of `keys`, those shown at or after `since` -> the digests of their drafts."""
        if not keys:
            return {}
        query = sa.select(shown_card.c.key_hash, shown_card.c.drafts).where(
            shown_card.c.key_hash.in_(sorted(set(keys))), shown_card.c.shown_at >= since
        )
        with self.engine.connect() as connection:
            return {
                key: frozenset(json.loads(drafts)) for key, drafts in connection.execute(query)
            }

    def remember_token(self, digest: str, expires_at: float) -> bool:
        """Record an accepted JWT id until `expires_at` (epoch s); False if already recorded.
        Bounded like every store call (`StoreUnavailable`)."""
        if self._sqlite_file is not None:
            new = self._gate.run(self._remember_in_sqlite, digest, int(expires_at) + 1)
        else:
            new = self._gate.run(self._remember, digest, int(expires_at) + 1)
        self._accepted += 1
        if self._accepted % PURGE_EVERY == 0:
            self.purge_tokens(time.time())
        return new

    def _remember_in_sqlite(self, digest: str, expires_at: int) -> bool:
        """One statement in autocommit on this thread's own sqlite3 connection: the insert every
        call makes, without SQLAlchemy's checkout, transaction and reset around it (0.03 ms
        instead of 0.09 ms here). The same table, and the same atomic ON CONFLICT."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._sqlite_file,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            self._pragmas(connection, None)
            self._local.connection = connection
            self._raw.append(connection)
        cursor = connection.execute(_REMEMBER_SQL, (digest, expires_at))
        return cursor.rowcount == 1

    def _remember(self, digest: str, expires_at: int) -> bool:
        statement = (
            self._insert(jwt_replay)
            .on_conflict_do_nothing(index_elements=["token_digest"])
            .returning(jwt_replay.c.token_digest)
        )
        with self.engine.begin() as connection:
            return bool(
                connection.execute(
                    statement, {"token_digest": digest, "expires_at": expires_at}
                ).all()
            )

    def purge_tokens(self, now: float) -> int:
        """Forget token ids whose tokens have expired (they can no longer be replayed)."""
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.delete(jwt_replay).where(jwt_replay.c.expires_at < int(now))
            )
        return result.rowcount

    def feedback_for_card(self, card_uuid: str) -> list[dict[str, Any]]:
        """Feedback rows for a card, each with the topic of the card when it was issued here."""
        query = (
            sa.select(feedback, issued_card.c.topic)
            .select_from(
                feedback.outerjoin(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid)
            )
            .where(feedback.c.card_uuid == card_uuid)
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        for row in rows:  # SQLite keeps no zone: values were written as UTC
            if row["received_at"].tzinfo is None:
                row["received_at"] = row["received_at"].replace(tzinfo=UTC)
        return rows

    def dispose(self) -> None:
        self.flush_and_stop()
        self._gate.close()
        for connection in self._raw:
            connection.close()
        self._raw.clear()
        self._local = threading.local()
        self.engine.dispose()


class _CardRecorder:
    """A bounded queue of issued-card rows and the one thread that writes them in batches.

    A failed write keeps its rows at the head of the queue and is retried on the next tick
    (the insert ignores rows already there, so a write that did land is not doubled); rows
    beyond `max_rows` are dropped and counted, never allowed to grow the process.
    """

    MAX_BATCH = 5_000

    def __init__(
        self,
        store: Store,
        interval_s: float,
        max_rows: int,
        *,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._max_rows = max_rows
        self._observe = observe
        self._rows: deque[Mapping[str, Any]] = deque()
        self._dropped = 0
        self._failing = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="card-recorder", daemon=True)
        self._thread.start()

    def put(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            room = max(self._max_rows - len(self._rows), 0)
            if room < len(rows):
                self._dropped += len(rows) - room
                rows = rows[:room]
            self._rows.extend(rows)

    @property
    def queued(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._write()
        self._write()

    def _write(self) -> None:
        while True:
            with self._lock:
                count = min(self.MAX_BATCH, len(self._rows))
                batch = [self._rows.popleft() for _ in range(count)]
                dropped, self._dropped = self._dropped, 0
            if dropped:
                log.warning("issued-card records dropped: queue full", extra={"dropped": dropped})
            written = self._write_batch(batch) if batch else True
            if self._observe is not None:
                self._observe(self.queued, dropped)
            if not written or len(batch) < self.MAX_BATCH:
                return

    def _write_batch(self, batch: list[Mapping[str, Any]]) -> bool:
        try:  # bounded like a request's store call: a dead store never hangs this thread
            self._store.bounded(self._store.write_card_rows, batch)
        except Exception as exc:  # analytics must never switch decision support off
            with self._lock:  # back to the head of the queue, within the cap
                room = max(self._max_rows - len(self._rows), 0)
                self._dropped += max(len(batch) - room, 0)
                self._rows.extendleft(reversed(batch[:room]))
            if not self._failing:
                log.warning(
                    "could not record issued cards: kept queued",
                    extra={"cause": describe_error(exc), "queued": self.queued},
                )
            self._failing = True
            return False
        if self._failing:
            log.info("issued cards recorded again", extra={"queued": self.queued})
        self._failing = False
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        lost = self.queued  # the final write failed too: the store is still away
        if lost:
            log.warning("issued-card records lost at exit: store unavailable", extra={"lost": lost})
            self._rows.clear()
            if self._observe is not None:
                self._observe(0, lost)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, busy_timeout_s: float = 15.0) -> None:
    """WAL with synchronous=NORMAL, SQLite's advice for WAL: a commit no longer waits for an
    fsync (the WAL is synced at checkpoints), so the JWT-id insert every call makes stops being
    its largest cost. The database stays consistent after any crash; what a power cut can undo
    is the last commits before it: a few issued-card rows, and token ids whose tokens expire
    within the hour. Use PostgreSQL or Redis (REDIS_URL) where that matters (README)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={max(1, int(busy_timeout_s * 1000))}")
    cursor.close()
