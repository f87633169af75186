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


def downgrade() -> None:
    op.drop_index("ix_shown_card_shown_at", "shown_card")
    op.drop_table("shown_card")
    op.drop_index("ix_snooze_until", "snooze")
    op.drop_table("snooze")
    op.drop_index("ix_issued_card_issued_at", "issued_card")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("disposition")
        batch.drop_column("patient_key")
        batch.drop_column("client")
