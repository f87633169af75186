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

        stream = environ.get("wsgi.input")
        counted = _Counted(stream) if stream is not None else None
        if counted is not None:
            environ["wsgi.input"] = counted
        result = self.app(environ, deferred)
        keep_alive = self.drain(environ, counted)
        if not keep_alive:
            force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
            if callable(force_close):  # gunicorn drops an app's own hop-by-hop headers
                force_close()
        if started:
            _start(start_response, started, keep_alive)
        return result

    def drain(self, environ: dict[str, Any], counted: _Counted | None) -> bool:
        """Discard the unread body; False when it is past the cap (then the connection closes).

        With a Content-Length, exactly what is left of it is read (a server such as werkzeug's
        hands over the raw socket: reading past the body would wait for the next request).
        Without one, the stream is read to its end only when the server terminates it
        (`wsgi.input_terminated`: gunicorn, a chunked body); otherwise there is no body.
        """
        if counted is None:
            return True
        try:
            declared: int | None = int(environ["CONTENT_LENGTH"])
        except (KeyError, ValueError):
            declared = None
        if declared is None and not environ.get("wsgi.input_terminated"):
            return True
        left = self.cap if declared is None else declared - counted.consumed
        if declared is not None and left > self.cap:
            return False
        try:
            while left > 0 or declared is None:
                want = min(CHUNK, left) if declared is not None else min(CHUNK, left + 1)
                data = counted.read(want)
                if not data:
                    return True
                left -= len(data)
                if left < 0:
                    return False
        except (OSError, ValueError):  # the client went away or sent a broken chunk
            return False
        return True


class _Counted:
    """The request's input, counting what the app reads of it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.consumed = 0

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self.consumed += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self.consumed += len(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self._stream.readlines(*args)
        self.consumed += sum(map(len, lines))
        return lines

    def __iter__(self):
        for line in self._stream:
            self.consumed += len(line)
            yield line


def _start(start_response: Callable[..., Any], started: list, keep_alive: bool):
    status, headers, exc_info = started[0]
    if not keep_alive:
        headers = [h for h in headers if h[0].lower() != "connection"]
        headers.append(("Connection", "close"))
    return start_response(status, headers, exc_info)
