"""Server-side sessions of the SMART launch (history page).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smart_session",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_smart_session_expires_at", "smart_session", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_smart_session_expires_at", "smart_session")
    op.drop_table("smart_session")
