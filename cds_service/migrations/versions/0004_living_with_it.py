"""Living with it (contract §7): who a card was for, what was withheld, snoozes, de-duplication.

`issued_card` gains the client's name, a one-way key of the patient (never the id itself) and
a disposition (NULL: shown; `silent`, `suppressed`, `deduplicated`: recorded, not returned),
with the index the analytics report reads by. `snooze` holds patient-view topics a clinician
put off; `shown_card` the order-select cards a later order-sign must not repeat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("client", sa.String(128)))
        batch.add_column(sa.Column("patient_key", sa.String(64)))
        batch.add_column(sa.Column("disposition", sa.String(16)))
    op.create_index("ix_issued_card_issued_at", "issued_card", ["issued_at"])
    op.create_table(
        "snooze",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("client", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_snooze_until", "snooze", ["until"])
    op.create_table(
        "shown_card",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("drafts", sa.Text, nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shown_card_shown_at", "shown_card", ["shown_at"])
    # Roll-ups the analytics report reads instead of millions of rows (store.py keeps them).
    op.create_table(
        "card_rollup",
        sa.Column("day", sa.String(10), primary_key=True),  # UTC date of issue, YYYY-MM-DD
        sa.Column("topic", sa.String(64), primary_key=True),
        sa.Column("client", sa.String(128), primary_key=True),
        sa.Column("disposition", sa.String(16), primary_key=True),  # "" when shown
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "card_patient",
        sa.Column("topic", sa.String(64), primary_key=True),
        sa.Column("client", sa.String(128), primary_key=True),
        sa.Column("patient_key", sa.String(64), primary_key=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_card_patient_last_at", "card_patient", ["last_at"])
    op.create_table(
        "feedback_rollup",
        sa.Column("day", sa.String(10), primary_key=True),  # UTC date the card was issued
        sa.Column("topic", sa.String(64), primary_key=True),
        sa.Column("client", sa.String(128), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("reason", sa.String(256), primary_key=True),  # "" without one
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    # Cards and feedback stored before this revision: into the roll-ups once.
    if op.get_bind().dialect.name == "postgresql":
        day = "to_char(timezone('UTC', c.issued_at), 'YYYY-MM-DD')"
    else:
        day = "substr(c.issued_at, 1, 10)"
    op.execute(
        f"INSERT INTO card_rollup (day, topic, client, disposition, n) "
        f"SELECT {day}, coalesce(c.topic, ''), '', '', count(*) FROM issued_card c "
        f"GROUP BY {day}, coalesce(c.topic, '')"
    )
    op.execute(
        f"INSERT INTO feedback_rollup (day, topic, client, outcome, reason, n) "
        f"SELECT {day}, coalesce(c.topic, ''), '', f.outcome, "
        f"coalesce(f.override_reason_code, ''), count(*) "
        f"FROM feedback f JOIN issued_card c ON c.card_uuid = f.card_uuid "
        f"GROUP BY {day}, coalesce(c.topic, ''), f.outcome, coalesce(f.override_reason_code, '')"
    )


def downgrade() -> None:
    op.drop_table("feedback_rollup")
    op.drop_index("ix_card_patient_last_at", "card_patient")
    op.drop_table("card_patient")
    op.drop_table("card_rollup")
    op.drop_index("ix_shown_card_shown_at", "shown_card")
    op.drop_table("shown_card")
    op.drop_index("ix_snooze_until", "snooze")
    op.drop_table("snooze")
    op.drop_index("ix_issued_card_issued_at", "issued_card")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("disposition")
        batch.drop_column("patient_key")
        batch.drop_column("client")
