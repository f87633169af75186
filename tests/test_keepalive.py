"""No call lost after an early refusal on a keep-alive connection (issue 15, item 1).

Socket level, against `cds-service serve` (real gunicorn): an early-refused call (every
refusal path, Content-Length and chunked, a 413 under and past the drain cap), then a second
call on the same connection, many times; every second call must be answered. Plus the two
pieces of the fix on their own: the app's body drain (any WSGI server) and the worker's
re-queue of read-ahead (pipelining).
"""

from __future__ import annotations

import io

import pytest

from cds_service.body_drain import DrainRequestBody
from cds_service.gunicorn_worker import _has_read_ahead

from .keepalive_pairs import MAX_BODY, refusals, run_pairs, server_env, token
from .server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(env=server_env(tmp_path_factory.mktemp("keepalive")), workers=2) as srv:
        yield srv


@pytest.mark.parametrize("pipelined", [False, True], ids=["next-after-answer", "pipelined"])
def test_every_call_after_an_early_refusal_is_answered(server, pipelined):
    kinds = list(refusals(MAX_BODY, token).values())
    outcome = run_pairs(server.port, kinds, pairs=len(kinds) * 40, parallel=16,
                        pipelined=pipelined)
    assert outcome.wrong == []
    assert outcome.lost_total == 0, dict(outcome.lost)
    assert sum(outcome.answered.values()) == len(kinds) * 40


class _Input(io.BytesIO):
    reads = 0

    def read(self, size=-1):
        self.reads += 1
        return super().read(size)


class _Response:
    closed = False

    def start_response(self, status, headers, exc_info=None):
        self.status, self.headers = status, headers

    def force_close(self):
        self.closed = True


def _refuse(environ, start_response):  # answers without reading the body
    start_response("401 UNAUTHORIZED", [("Content-Type", "application/json")])
    return [b"{}"]


def _call(body: bytes, cap: int, *, declared: int | None = None, terminated: bool = True,
          app=_refuse):
    stream = _Input(body)
    environ = {"wsgi.input": stream}
    if declared is not None:
        environ["CONTENT_LENGTH"] = str(declared)
    if terminated:
        environ["wsgi.input_terminated"] = True
    response = _Response()
    out = DrainRequestBody(app, cap)(environ, response.start_response)
    assert out == [b"{}"] and response.status.startswith("401")
    return stream, response


def test_an_unread_body_is_discarded_before_the_answer_and_the_connection_kept():
    stream, response = _call(b"x" * 300_000, cap=1_000_000, declared=300_000)
    assert stream.tell() == 300_000  # all of it read, in chunks
    assert stream.reads >= 300_000 // (64 * 1024)
    assert not response.closed and ("Connection", "close") not in response.headers


def test_what_the_app_read_is_not_read_again_and_nothing_past_the_declared_length():
    def read_some(environ, start_response):
        environ["wsgi.input"].read(1000)
        return _refuse(environ, start_response)

    # the next request's bytes after the body stay unread (werkzeug hands over the socket)
    stream, response = _call(b"x" * 5000 + b"GET / HTTP/1.1", cap=10_000, declared=5000,
                             terminated=False, app=read_some)
    assert stream.tell() == 5000 and not response.closed


def test_a_chunked_body_past_the_cap_is_read_up_to_the_cap_then_the_connection_closed():
    stream, response = _call(b"x" * 300_000, cap=100_000)  # no Content-Length: chunked
    assert stream.tell() <= 100_001
    assert response.closed and ("Connection", "close") in response.headers


def test_a_chunked_body_under_the_cap_is_read_to_its_end():
    stream, response = _call(b"x" * 90_000, cap=100_000)
    assert stream.tell() == 90_000 and not response.closed


def test_without_a_length_or_a_terminated_stream_there_is_no_body_to_read():
    stream, response = _call(b"GET / HTTP/1.1", cap=100_000, terminated=False)
    assert stream.tell() == 0 and not response.closed


def test_a_declared_length_past_the_cap_is_not_read_at_all():
    stream, response = _call(b"x" * 300_000, cap=100_000, declared=300_000)
    assert stream.tell() == 0
    assert response.closed and ("Connection", "close") in response.headers


def test_the_worker_sees_a_request_already_read_off_the_socket():
    class Unreader:
        buf = io.BytesIO()

    class Parser:
        unreader = Unreader()

    class Conn:
        parser = Parser()

    assert not _has_read_ahead(Conn())
    Unreader.buf.write(b"GET /healthz HTTP/1.1\r\n")
    assert _has_read_ahead(Conn())
    assert not _has_read_ahead(object())  # not yet parsed: nothing buffered
