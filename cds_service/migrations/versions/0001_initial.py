"""Issued cards and feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_card",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(64)),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "feedback",
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


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("issued_card")
