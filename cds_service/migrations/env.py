"""Alembic environment: run by `Store.migrate()` with the store's own connection."""

from __future__ import annotations

from alembic import context

from cds_service.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
