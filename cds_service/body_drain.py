"""Read what is left of a request body before the answer goes out (issue 15: no lost call).

A call refused early (401, 404, 405, 413, 415, a 400 on a bad header...) is answered without
its body being read. gunicorn's gthread worker then reads and discards that body *after* the
answer: a client that sends its next call as soon as it has the answer can have that call read
by the discard into the parser's buffer, after which the connection waits for the socket to
become readable, which never happens, and is closed after `keepalive` seconds unanswered
(226 of 1,000 such pairs with a 30 KB body, `bench/keepalive_pairs.py`). While the answer has
not gone out, the client cannot have sent its next call, so a discard done here reads the
body and nothing past it. Any WSGI server, any worker class: it holds for every configuration.

A body is discarded in 64 KiB chunks, never held. Past `cap` bytes (or a declared
Content-Length past it) nothing more is read and the connection is closed after the answer
(`Connection: close`; under gunicorn through its response's `force_close`), so a huge body
costs neither memory nor time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

CHUNK = 64 * 1024


class DrainRequestBody:
    def __init__(self, app: Callable[..., Iterable[bytes]], cap: int) -> None:
        self.app = app
        self.cap = cap

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        started: list[tuple[str, list[tuple[str, str]], Any]] = []

        def deferred(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started[:] = [(status, headers, exc_info)]
            return write

        def write(data: bytes) -> None:  # WSGI's legacy write(); Flask never calls it
            if started:
                _start(start_response, started, True)(data)
                started.clear()

        result = self.app(environ, deferred)
        keep_alive = self.drain(environ)
        if not keep_alive:
            force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
            if callable(force_close):  # gunicorn drops an app's own hop-by-hop headers
                force_close()
        if started:
            _start(start_response, started, keep_alive)
        return result

    def drain(self, environ: dict[str, Any]) -> bool:
        """Discard the unread body; False when it is past the cap (then the connection closes)."""
        stream = environ.get("wsgi.input")
        if stream is None:
            return True
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > self.cap:
            return False
        left = self.cap
        try:
            while True:
                data = stream.read(min(CHUNK, left + 1))
                if not data:
                    return True
                left -= len(data)
                if left < 0:
                    return False
        except (OSError, ValueError):  # the client went away or sent a broken chunk
            return False


def _start(start_response: Callable[..., Any], started: list, keep_alive: bool):
    status, headers, exc_info = started[0]
    if not keep_alive:
        headers = [h for h in headers if h[0].lower() != "connection"]
        headers.append(("Connection", "close"))
    return start_response(status, headers, exc_info)
