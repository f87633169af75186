"""Scale of the store (issue 18, item 5): one simulated year of a 500-bed hospital in PostgreSQL.

    .venv/bin/python bench/store_scale.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--cards 5000000] [--feedback 1000000] [--calls 500] [--keep]

In a fresh schema of the database at `--url` (dropped at the end unless `--keep`):

1. migrate, then measure on the empty store ("before"): the card-recording cost of one call
   (`Store.record_cards` of two cards: written at once with the roll-ups, as without the
   background writer; and queued, as a call pays under `cds-service serve`), the snooze
   look-up a patient-view call makes, and a whole patient-view call in-process (Flask test
   client, prefetch in the request, auth off);
2. fill it in bulk inside the database (`INSERT ... SELECT generate_series`): `--cards` issued
   cards over 365 days across 15 topics, 3 clients, 60,000 patients (2% silent, 1% snoozed),
   and `--feedback` feedback items on them (a third accepted, the rest overridden with five
   reasons), then ANALYZE;
3. measure the same figures again ("after"), and `cds-service report --since 365d`'s
   aggregation (`analytics.build_report`, then the HTML rendering) three times;
4. measure an empty store once more ("control"): the machine is shared, and a control taken
   last tells the load of the moment from the size of the store.

Figures are printed (median and p95 of the per-call times), never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds_service import Settings, analytics, create_app  # noqa: E402
from cds_service.guideline import TOPICS  # noqa: E402
from cds_service.store import Store, normalise_url, patient_key  # noqa: E402
from tests.builders import full_record, hook_request  # noqa: E402

CLIENTS = ("epic-like", "oracle-health-like", "default")
REASONS = ("treated-elsewhere", "patient-declined", "snooze-30d", "patient-declines", "other")


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1000:.3f} ms, p95 {p95 * 1000:.3f} ms"


def _cards(n: int) -> list[dict]:
    return [
        {
            "uuid": str(uuid.uuid4()),
            "indicator": "warning",
            "source": {"topic": {"code": TOPICS[i % len(TOPICS)]}},
        }
        for i in range(n)
    ]


def measure(store: Store, app, calls: int) -> dict[str, list[float]]:
    now = datetime.now(UTC)
    record, lookup, call = [], [], []
    key = patient_key("bench-patient")
    for _ in range(calls):
        cards = _cards(2)
        t = time.perf_counter()
        store.record_cards(
            "vitamin-d-patient-view", cards, issued_at=now, client="default", patient_key=key
        )
        record.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.snoozes("default", key, ["vitd-deficiency", "osteoporosis-calcium-vitd"], now)
        lookup.append(time.perf_counter() - t)
    queued = []
    store.record_in_background()  # as under `cds-service serve`: a call only queues its rows
    try:
        for _ in range(calls):
            cards = _cards(2)
            t = time.perf_counter()
            store.record_cards(
                "vitamin-d-patient-view", cards, issued_at=now, client="default", patient_key=key
            )
            queued.append(time.perf_counter() - t)
    finally:
        store.flush_and_stop()
    client = app.test_client()
    body = hook_request(prefetch=full_record())
    for _ in range(calls):
        t = time.perf_counter()
        reply = client.post("/cds-services/vitamin-d-patient-view", json=body)
        call.append(time.perf_counter() - t)
        assert reply.status_code == 200
    return {
        "record_cards, written at once (2 cards)": record,
        "record_cards, queued as under serve": queued,
        "snooze look-up": lookup,
        "patient-view call": call,
    }


def fill(engine: sa.Engine, cards: int, feedback: int) -> None:
    topics = "ARRAY[" + ",".join(f"'{t}'" for t in TOPICS) + "]"
    clients = "ARRAY[" + ",".join(f"'{c}'" for c in CLIENTS) + "]"
    reasons = "ARRAY[" + ",".join(f"'{r}'" for r in REASONS) + "]"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"""
INSERT INTO issued_card (card_uuid, service_id, topic, indicator, issued_at, client,
                         patient_key, disposition)
SELECT md5('card' || i),
       (ARRAY['vitamin-d-patient-view','vitamin-d-order-select','vitamin-d-order-sign'])[1 + i % 3],
       ({topics})[1 + i % {len(TOPICS)}],
       (ARRAY['info','warning','info','critical'])[1 + i % 4],
       now() - make_interval(secs => (i::float8 / :cards) * 365 * 86400),
       ({clients})[1 + (i / 7) % 3],
       md5('patient' || (i::bigint * 7919) % 60000),
       CASE WHEN i % 50 = 0 THEN 'silent' WHEN i % 100 = 1 THEN 'suppressed' END
FROM generate_series(1, :cards) AS i
"""
            ),
            {"cards": cards},
        )
        connection.execute(
            sa.text(
                f"""
INSERT INTO feedback (item_hash, service_id, card_uuid, outcome, override_reason_system,
                      override_reason_code, outcome_timestamp, received_at)
SELECT md5('feedback' || i), 'vitamin-d-patient-view', md5('card' || (i::bigint * 5 + 2)),
       CASE WHEN i % 3 = 0 THEN 'accepted' ELSE 'overridden' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'urn:vitd-cds:override-reason' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE ({reasons})[1 + i % 5] END,
       '2026-01-01T00:00:00Z', now()
FROM generate_series(1, :feedback) AS i
"""
            ),
            {"feedback": feedback},
        )
        # the roll-ups the store keeps as it writes (store.py), built in bulk here
        connection.execute(sa.text("DELETE FROM card_rollup"))
        connection.execute(sa.text("DELETE FROM card_patient"))
        connection.execute(sa.text("DELETE FROM feedback_rollup"))
        day = "to_char(timezone('UTC', c.issued_at), 'YYYY-MM-DD')"
        connection.execute(
            sa.text(
                f"INSERT INTO card_rollup (day, topic, client, disposition, n) "
                f"SELECT {day}, coalesce(topic, ''), coalesce(client, ''), "
                f"coalesce(disposition, ''), count(*) FROM issued_card c GROUP BY 1, 2, 3, 4"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO card_patient (topic, client, patient_key, last_at) "
                "SELECT topic, client, patient_key, max(issued_at) FROM issued_card "
                "WHERE disposition IS NULL AND patient_key IS NOT NULL GROUP BY 1, 2, 3"
            )
        )
        connection.execute(
            sa.text(
                f"INSERT INTO feedback_rollup (day, topic, client, outcome, reason, n) "
                f"SELECT {day}, coalesce(c.topic, ''), coalesce(c.client, ''), f.outcome, "
                f"coalesce(f.override_reason_code, ''), count(*) FROM feedback f "
                f"JOIN issued_card c ON c.card_uuid = f.card_uuid "
                f"WHERE c.disposition IS NULL GROUP BY 1, 2, 3, 4, 5"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("issued_card", "feedback", "card_rollup", "card_patient", "feedback_rollup"):
            connection.execute(sa.text(f"ANALYZE {table}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cards", type=int, default=5_000_000)
    parser.add_argument("--feedback", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the filled schema")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(args.url))
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}options=-csearch_path%3D{schema}"
    app = create_app(Settings(database_url=url, auth_disabled=True))
    store = app.extensions["vitd.runtime"].store
    try:
        print(f"schema {schema}; {args.calls} calls per figure")
        before = measure(store, app, args.calls)
        for name, samples in before.items():
            print(f"before (empty store)  {name}: {_ms(samples)}")
        t = time.perf_counter()
        fill(store.engine, args.cards, args.feedback)
        print(
            f"filled {args.cards:,} issued cards and {args.feedback:,} feedback items in "
            f"{time.perf_counter() - t:.1f} s"
        )
        after = measure(store, app, args.calls)
        for name, samples in after.items():
            print(f"after ({args.cards:,} cards) {name}: {_ms(samples)}")
        now = datetime.now(UTC)
        for run in range(3):
            t = time.perf_counter()
            report = analytics.build_report(store, now - timedelta(days=365), now)
            built = time.perf_counter() - t
            page = analytics.as_html(report)
            total = time.perf_counter() - t
            print(
                f"report --since 365d, run {run + 1}: {built:.2f} s in the database, "
                f"{total:.2f} s with the HTML ({len(report.rows)} rows, "
                f"{len(report.weeks)} weekly points, {len(page):,} bytes)"
            )
        # The machine is shared: an empty store measured again now tells load from size.
        control = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{control}"'))
        other = create_app(
            Settings(database_url=f"{args.url}{sep}options=-csearch_path%3D{control}",
                     auth_disabled=True)
        )
        try:
            again = measure(other.extensions["vitd.runtime"].store, other, args.calls)
            for name, samples in again.items():
                print(f"control (empty store, measured last)  {name}: {_ms(samples)}")
        finally:
            other.extensions["vitd.runtime"].fhir.close()
            other.extensions["vitd.runtime"].store.dispose()
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{control}" CASCADE'))
    finally:
        app.extensions["vitd.runtime"].fhir.close()
        store.dispose()
        if not args.keep:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
