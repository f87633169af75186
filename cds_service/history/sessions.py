"""Server-side sessions of the SMART launch: the browser holds only a random key.

The Flask session cookie (signed with `CDS_SECRET_KEY`) carries that key and nothing else. What
the launch needs between requests (state, PKCE verifier, issuer, token endpoint) and then the
access token live in the store's `smart_session` table, encrypted with a key derived from
`CDS_SECRET_KEY`, under the SHA-256 of the browser's key. The table is shared by all workers,
so the authorize redirect and the callback may land on different gunicorn workers.
Rows expire (`SESSION_TTL_S`, or the token's expiry); expired rows are purged on each write.
Every read and write goes through the store's gate (`Store.bounded`), like the hook calls' store
calls: a database that does not answer costs a page at most the store's wait, and page loads
never hold more request threads than the gate lets wait (`StoreUnavailable`: a 503 page).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..store import Store, metadata

SESSION_TTL_S = 3600  # a launch older than this must be redone from the EHR

smart_session = sa.Table(
    "smart_session",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def _fernet(secret: str):
    from cryptography.fernet import Fernet  # loaded only when SMART is configured

    digest = hashlib.sha256(b"vitd-cds smart session\0" + secret.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite keeps no zone


class SessionStore:
    def __init__(self, store: Store, secret: str) -> None:
        self._store = store
        self.engine = store.engine
        self._fernet = _fernet(secret)

    def create(self, data: dict[str, Any], *, now: datetime) -> str:
        """A new session holding `data`; returns the key for the browser."""
        key = secrets.token_urlsafe(32)
        self._store.bounded(self._insert, _hash(key), self._seal(data), now)
        return key

    def _insert(self, key_hash: str, sealed: str, now: datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(smart_session.delete().where(smart_session.c.expires_at < now))
            connection.execute(
                smart_session.insert().values(
                    key_hash=key_hash,
                    data=sealed,
                    expires_at=now + timedelta(seconds=SESSION_TTL_S),
                )
            )

    def get(self, key: str | None, *, now: datetime) -> dict[str, Any] | None:
        """The data of a live session, else None (unknown, expired or not decryptable)."""
        if not isinstance(key, str) or not key:
            return None
        row = self._store.bounded(self._select, _hash(key))
        if row is None or _aware(row.expires_at) <= now:
            return None
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(row.data.encode("ascii")))
        except (InvalidToken, ValueError):
            return None

    def _select(self, key_hash: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(smart_session.c.data, smart_session.c.expires_at).where(
                    smart_session.c.key_hash == key_hash
                )
            ).first()

    def replace(
        self, key: str, data: dict[str, Any], *, now: datetime, expires_at: datetime | None = None
    ) -> None:
        """Overwrite a session's data (e.g. state and verifier give way to the token)."""
        until = expires_at or now + timedelta(seconds=SESSION_TTL_S)
        update = (
            smart_session.update()
            .where(smart_session.c.key_hash == _hash(key))
            .values(data=self._seal(data), expires_at=until)
        )
        self._store.bounded(self._write, update)

    def delete(self, key: str) -> None:
        delete = smart_session.delete().where(smart_session.c.key_hash == _hash(key))
        self._store.bounded(self._write, delete)

    def _write(self, statement: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(statement)

    def _seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode("utf-8")).decode("ascii")
