"""A loopback stub FHIR server for tests and benchmarks.

Usage::

    with FhirStub(delay_s=0.2) as stub:
        stub.add("Patient/123", {"resourceType": "Patient", "id": "123"})
        stub.add("Observation", searchset([obs1, obs2]))  # any query string
        stub.add("Observation", Reply(status=500), query={"code": "x"})  # more specific
        stub.add_pages("Condition", [[cond1], [cond2]])  # page 1 links to page 2
        stub.add("token", lambda req: Reply({"echo": req.form["code"]}))  # computed reply
        ...  # call the code under test with fhirServer=stub.base_url
    assert stub.requests[0].authorization == "Bearer abc"

- Serves `http://127.0.0.1:<free port>/fhir`. Routes are paths relative to that base, as sent
  (still percent-encoded), matched exactly; a route with `query` matches only when every given
  parameter has that value, and beats a route without `query`; among equals the latest
  `add` wins (override a default). Unknown paths get a 404 OperationOutcome.
- `delay_s` (stub-wide) or `Reply.delay_s` (per route) holds each reply back, `Reply.drip_s`
  trickles the body out slowly; waits are cut short when the stub closes, so tests that time
  out early do not wait for them.
- A route may be a callable taking the `Recorded` request and returning a `Reply`: a stub
  authorization server (redirect to the caller's `redirect_uri`, a token endpoint reading the
  POSTed form) is a FhirStub with such routes. GET and POST are served alike.
- Every request is recorded (`stub.requests`) with its path, query, Authorization, Accept and
  Cookie headers and monotonic start/end times, so tests can assert tokens and overlapping
  intervals.
  A request is recorded before its reply is sent, so whoever got an answer finds it there.
- HTTP/1.0, one connection per request: nothing lingers after `close()`, so no ResourceWarning.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BASE_PATH = "/fhir"


@dataclass(frozen=True)
class Reply:
    """What a route answers. `body`: dict/list -> JSON, str/bytes -> sent as is, None -> empty."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float | None = None  # None: the stub-wide delay
    content_length: bool = True  # False: no Content-Length; the body ends when the socket closes
    drip_s: float = 0.0  # > 0: the body goes out in 10 pieces with this pause between them


@dataclass(frozen=True)
class Recorded:
    """One request as the stub saw it."""

    path: str  # relative to the base, percent-encoded as sent, e.g. "Patient/a%2Fb"
    query: dict[str, list[str]]  # decoded query parameters
    authorization: str | None
    accept: str | None
    cookie: str | None
    start: float  # time.monotonic() when the request line was read
    end: float  # time.monotonic() when the reply was ready to go out (after any delay)
    method: str = "GET"
    body: bytes = b""

    @property
    def form(self) -> dict[str, str]:
        """A POSTed application/x-www-form-urlencoded body, first value of each field."""
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}

    @property
    def args(self) -> dict[str, str]:
        """The query, first value of each parameter."""
        return {k: v[0] for k, v in self.query.items()}


def searchset(resources: Sequence[dict], *, next_url: str | None = None) -> dict:
    """A searchset Bundle of `resources`, with a `next` link when given."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def operation_outcome(severity: str = "error", text: str = "stub failure") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": "processing", "diagnostics": text}],
    }


@dataclass(frozen=True)
class _Route:
    query: Mapping[str, str] | None
    reply: Reply | Callable[[Recorded], Reply]


class FhirStub:
    """Threaded stub FHIR server on 127.0.0.1; use as a context manager (or start()/close())."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self._routes: dict[str, list[_Route]] = {}
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> FhirStub:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.stub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut delays short, join every handler thread, close the socket."""
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()  # joins handler threads (block_on_close)
        assert self._thread is not None
        self._thread.join()
        self._server = None

    def __enter__(self) -> FhirStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # configuration ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The `fhirServer` to hand to the code under test (no trailing slash)."""
        assert self._server is not None, "start the stub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{BASE_PATH}"

    def add(
        self,
        path: str,
        reply: Reply | dict | list | Callable[[Recorded], Reply],
        *,
        query: Mapping[str, str] | None = None,
    ) -> None:
        """Answer {base}/{path}; a bare dict/list is a 200 JSON reply, a callable computes it."""
        if not isinstance(reply, Reply) and not callable(reply):
            reply = Reply(body=reply)
        route = _Route(dict(query) if query else None, reply)
        with self._lock:
            self._routes.setdefault(path.strip("/"), []).append(route)

    def add_pages(self, path: str, pages: Sequence[Sequence[dict]]) -> None:
        """Serve `pages` as a chain of searchset Bundles: page n links to `{path}?_page=n+1`."""
        for number, resources in enumerate(pages, start=1):
            next_url = None
            if number < len(pages):
                next_url = f"{self.base_url}/{path}?_page={number + 1}"
            query = {"_page": str(number)} if number > 1 else None
            self.add(path, searchset(resources, next_url=next_url), query=query)

    def add_hapi_pages(
        self,
        path: str,
        pages: Sequence[Sequence[dict]],
        *,
        cache_id: str = "c0ffee",
        query: Mapping[str, str] | None = None,
    ) -> None:
        """Serve `pages` as HAPI FHIR pages them: page 1 at `{path}`, every later page at the
        server's base itself, `{base}?_getpages=<id>&_getpagesoffset=<n>&_count=..&_bundletype=searchset`.
        `query`: what the first page's search must carry (e.g. the patient)."""
        size = max(len(p) for p in pages) or 1
        for number, resources in enumerate(pages, start=1):
            next_url = None
            if number < len(pages):
                next_url = (
                    f"{self.base_url}?_getpages={cache_id}&_getpagesoffset={number * size}"
                    f"&_count={size}&_pretty=true&_bundletype=searchset"
                )
            if number == 1:
                self.add(path, searchset(resources, next_url=next_url), query=query)
            else:
                query = {"_getpages": cache_id, "_getpagesoffset": str((number - 1) * size)}
                self.add("", searchset(resources, next_url=next_url), query=query)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    # used by the handler ----------------------------------------------------------------------

    def _reply_for(self, path: str, query: dict[str, list[str]]) -> Reply | Callable:
        with self._lock:
            routes = list(self._routes.get(path, []))
        routes.reverse()  # the latest registration wins, so tests can override a default
        specific = [r for r in routes if r.query is not None]
        for route in specific + [r for r in routes if r.query is None]:
            if route.query is None or all(
                value in query.get(name, []) for name, value in route.query.items()
            ):
                return route.reply
        return Reply(status=404, body=operation_outcome(text="no such route"))

    def _record(self, entry: Recorded) -> None:
        with self._lock:
            self._requests.append(entry)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins handlers
    block_on_close = True
    # A real server's listen backlog, not socketserver's 5: a call's parallel reads (a dozen
    # Medication/{id}) past 5 would wait for a SYN retry (1 s) and miss the connect timeout.
    request_queue_size = 128
    stub: FhirStub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (our timeout tests) is expected; anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: test output stays clean."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._handle("POST")

    def _handle(self, method: str) -> None:
        start = time.monotonic()
        stub = self.server.stub
        parts = urlsplit(self.path)
        path = parts.path[len(BASE_PATH) :].strip("/") if parts.path.startswith(BASE_PATH) else ""
        query = parse_qs(parts.query, keep_blank_values=True)
        length = self.headers.get("Content-Length", "")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        seen = Recorded(
            path=path,
            query=query,
            authorization=self.headers.get("Authorization"),
            accept=self.headers.get("Accept"),
            cookie=self.headers.get("Cookie"),
            start=start,
            end=start,
            method=method,
            body=body,
        )
        reply = stub._reply_for(path, query)
        if not isinstance(reply, Reply):
            reply = reply(seen)
        delay = stub.delay_s if reply.delay_s is None else reply.delay_s
        if delay > 0:
            stub._closing.wait(delay)
        # Recorded before the first byte goes out, so a caller that has its answer always
        # finds its request in `stub.requests`.
        stub._record(replace(seen, end=time.monotonic()))
        try:
            self._send(reply)
        except ConnectionError:
            pass  # the client timed out and closed its end

    def _send(self, reply: Reply) -> None:
        body = reply.body
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body or b""
        self.send_response(reply.status)
        headers = {"Content-Type": "application/fhir+json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if reply.content_length:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if reply.drip_s <= 0:
            self.wfile.write(data)
            return
        step = max(1, -(-len(data) // 10))
        for offset in range(0, len(data), step):
            self.wfile.write(data[offset : offset + step])
            self.wfile.flush()
            if self.server.stub._closing.wait(reply.drip_s):
                return
