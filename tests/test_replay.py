"""A JWT id is accepted once across all workers: two app instances share one replay store.

Backends: the database (SQLite file, and the real PostgreSQL at 127.0.0.1:5432, database
`test`, in a schema of its own) and Redis at 127.0.0.1:6379 (`REDIS_URL`). Unreachable
PostgreSQL or Redis is a failure with a printed reason, not a skip: CI has both.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis

from cds_service.auth import RedisReplayStore, jti_digest
from cds_service.store import Store

from .builders import hook_request, null_prefetch
from .jwt_helpers import ISS, SERVICE, signer

REDIS_URL = "redis://127.0.0.1:6379/0"
PATH = f"/cds-services/{SERVICE}"


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis at 127.0.0.1:6379 is needed: {type(exc).__name__}")
    yield client
    client.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        "redis",
    ]
)
def two_workers(request, make_app, auth_settings, tmp_path):
    """Two app instances (as two gunicorn workers would be) sharing one replay store."""
    changes: dict = {"database_url": f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    if request.param == "postgresql":
        changes["database_url"] = request.getfixturevalue("pg_url")
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        changes["redis_url"] = REDIS_URL
    settings = auth_settings.with_overrides(**changes)
    first = make_app(settings)
    second = make_app(settings.with_overrides(migrate_on_start=False))
    yield request.param, first.test_client(), second.test_client()
    for app in (first, second):
        replay = app.extensions["vitd.auth"].replay
        if isinstance(replay, RedisReplayStore):
            replay.close()


def post(client, token):
    return client.post(
        PATH,
        data=json.dumps(hook_request(prefetch=null_prefetch())),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def forget(kind: str, jtis: list[str]) -> None:
    if kind == "redis":
        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(*[RedisReplayStore.PREFIX + jti_digest(ISS, j) for j in jtis])


def test_replayed_jti_across_two_workers(two_workers):
    kind, a, b = two_workers
    jti = f"replay-{uuid.uuid4().hex}"
    token = signer().sign(jti=jti)
    try:
        assert post(a, token).status_code == 200
        replayed = post(b, token)
        assert replayed.status_code == 401 and replayed.get_json() == {"error": "unauthorized"}
        assert post(a, token).status_code == 401
        assert post(b, signer().sign()).status_code == 200  # other tokens still pass
    finally:
        forget(kind, [jti])


def test_simultaneous_replays_accept_exactly_one(two_workers):
    """The same token raced at both workers from 8 threads: one 200, the rest 401."""
    kind, a, b = two_workers
    jti = f"race-{uuid.uuid4().hex}"
    token = signer().sign(jti=jti)
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def fire(client):
        start.wait()
        status = post(client, token).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=fire, args=((a, b)[n % 2],)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [401] * 7
    finally:
        forget(kind, [jti])


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_database_replay_rows_expire(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    store = Store(url)
    try:
        store.migrate()
        now = time.time()
        assert store.remember_token("a" * 64, now - 10) is True
        assert store.remember_token("a" * 64, now - 10) is False
        assert store.remember_token("b" * 64, now + 600) is True
        assert store.purge_tokens(now) == 1  # only the expired one
        assert store.remember_token("b" * 64, now + 600) is False
    finally:
        store.dispose()


def test_redis_replay_keys_expire_with_the_token(redis_client):
    store = RedisReplayStore(REDIS_URL)
    digest = jti_digest(ISS, f"ttl-{uuid.uuid4().hex}")
    try:
        assert store.remember_token(digest, time.time() + 120) is True
        assert store.remember_token(digest, time.time() + 120) is False
        ttl = redis_client.ttl(RedisReplayStore.PREFIX + digest)
        assert 100 <= ttl <= 122
    finally:
        redis_client.delete(RedisReplayStore.PREFIX + digest)
        store.close()


def test_unreachable_replay_store_refuses_with_503(make_app, auth_settings):
    """No way to know whether the token was used: refused, and said to be temporary."""
    app = make_app(auth_settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    reply = post(app.test_client(), signer().sign())
    assert reply.status_code == 503
    assert reply.get_json() == {"error": "authentication temporarily unavailable, retry later"}
    app.extensions["vitd.auth"].replay.close()
