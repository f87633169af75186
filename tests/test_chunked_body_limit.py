"""CDS_MAX_BODY_BYTES holds for a chunked body (no Content-Length) as for a sized one: 413
with the JSON error, under the real server (gunicorn), where chunked bodies arrive."""

from __future__ import annotations

import json

import pytest
import requests

from .builders import hook_request, null_prefetch
from .server_process import ServerProcess

LIMIT = 4096
PV = "/cds-services/vitamin-d-patient-view"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "CDS_AUTH_DISABLED": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('chunked') / 's.sqlite3'}",
        "CDS_MAX_BODY_BYTES": str(LIMIT),
    }
    with ServerProcess(env=env, workers=1) as srv:
        yield srv


def _body(size: int) -> bytes:
    """A valid hook request of exactly `size` bytes."""
    body = hook_request(prefetch=null_prefetch())
    body["context"]["pad"] = ""
    short = size - len(json.dumps(body).encode())
    assert short >= 0
    body["context"]["pad"] = "x" * short
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def _chunked(raw: bytes):
    return (raw[i : i + 1000] for i in range(0, len(raw), 1000))  # a generator: no length


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT, 100 * LIMIT])
def test_chunked_body_over_the_limit_is_a_413(server, size):
    reply = requests.post(
        server.base_url + PV,
        data=_chunked(_body(size)),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 413, reply.text
    assert reply.json() == {"error": "request entity too large", "details": [f"at most {LIMIT} bytes"]}


def test_chunked_body_at_the_limit_is_read_whole(server):
    reply = requests.post(
        server.base_url + PV,
        data=_chunked(_body(LIMIT)),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text


def test_sized_body_over_the_limit_is_a_413_too(server):
    reply = requests.post(
        server.base_url + PV,
        data=_body(LIMIT + 1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 413
