"""Early-refused call, then a second call on the same keep-alive connection, at socket level.

gunicorn's gthread worker drains an unread request body *after* the answer; a client that
sends its next call as soon as it has the answer can have that call swallowed by the drain
(read into the parser's buffer, the connection then parked waiting for a readability that
never comes, and closed after `keepalive` seconds with no answer). Used by
tests/test_keepalive.py and bench/keepalive_pairs.py:

    lost = run_pairs(port, [REFUSALS["401"]], pairs=1000, parallel=40)
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .jwt_helpers import ISS, jwks, signer, write_issuers

MAX_BODY = 64 * 1024  # the body limit the served instance runs with
SERVICE = "/cds-services/vitamin-d-patient-view"
_BODY = b'{"hook": "patient-view", "hookInstance": "x", "context": {}, "pad": "' + b"p" * 30000 + b'"}'


def _request(method: str, path: str, body: bytes, *, content_type="application/json",
             chunked: bool = False, extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}"
    if chunked:
        pieces = [body[i:i + 700] for i in range(0, len(body), 700)]
        data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + data
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Refusal:
    """A call the service refuses before reading its body, and the status it must get."""

    name: str
    build: Callable[[], bytes]  # the request's bytes (a fresh token each time, if any)
    status: int
    keeps_alive: bool = True  # False: the answer closes the connection (body past the cap)


def refusals(max_body_bytes: int, token: Callable[[str], str]) -> dict[str, Refusal]:
    """Every early-refusal path, against a server with auth on and this body limit.
    `token(path)`: a valid bearer token for a call to `path` (for refusals past auth)."""
    over = b"x" * (max_body_bytes + max_body_bytes // 2)  # over the limit, under the drain cap
    huge = b"x" * (max_body_bytes * 3)  # past the drain cap too: answered, then closed
    feedback = f"{SERVICE}/feedback"

    def signed(path: str) -> str:
        return f"Authorization: Bearer {token(path)}\r\n"

    def kind(name, status, method, path, body, *, auth=False, keeps_alive=True, **options):
        def build() -> bytes:
            extra = signed(path) if auth else ""
            return _request(method, path, body, extra=extra, **options)

        return name, Refusal(name, build, status, keeps_alive)

    return dict([
        kind("401", 401, "POST", SERVICE, _BODY),
        kind("401-chunked", 401, "POST", SERVICE, _BODY, chunked=True),
        kind("404", 404, "POST", "/cds-services/no-such-service", _BODY),
        kind("405", 405, "PUT", SERVICE, _BODY),
        kind("415", 415, "POST", feedback, _BODY, auth=True, content_type="text/plain"),
        kind("413", 413, "POST", SERVICE, over, auth=True),
        kind("413-chunked", 413, "POST", SERVICE, over, auth=True, chunked=True),
        kind("413-past-cap", 413, "POST", SERVICE, huge, auth=True, keeps_alive=False),
    ])


NEXT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class ResponseReader:
    """Reads HTTP/1.1 responses off a raw socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buf += data

    def response(self) -> tuple[int, dict[str, str]]:
        """One HTTP/1.1 response (Content-Length or chunked body): status and headers."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                self._fill()
            self.buf = self.buf[length:]
        return status, headers


@dataclass
class Outcome:
    answered: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)  # second call unanswered, per refusal
    wrong: list[str] = field(default_factory=list)  # unexpected status or connection handling

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())


def one_pair(port: int, refusal: Refusal, outcome: Outcome, lock: threading.Lock, *,
             pipelined: bool = False, timeout_s: float = 10.0) -> None:
    """The refused call, then `GET /healthz` sent the moment the refusal is read (or, with
    `pipelined`, both in one write). A second call with no answer is a lost call."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        reader = ResponseReader(sock)
        try:
            sock.sendall(refusal.build() + (NEXT if pipelined else b""))
            status, headers = reader.response()
        except OSError as exc:
            with lock:
                outcome.wrong.append(f"{refusal.name}: no answer to the refused call ({exc!r})")
            return
        closes = headers.get("connection", "").lower() == "close"
        if status != refusal.status or closes == refusal.keeps_alive:
            with lock:
                outcome.wrong.append(f"{refusal.name}: {status}, connection={closes and 'close'}")
            return
        if not refusal.keeps_alive:
            with lock:
                outcome.answered[refusal.name] += 1
            return
        try:
            if not pipelined:
                sock.sendall(NEXT)
            status, _ = reader.response()
            ok = status == 200
        except OSError:  # closed, reset or timed out: the second call was lost
            ok = False
        with lock:
            (outcome.answered if ok else outcome.lost)[refusal.name] += 1


def run_pairs(port: int, kinds: Sequence[Refusal], *, pairs: int, parallel: int = 32,
              pipelined: bool = False, timeout_s: float = 10.0) -> Outcome:
    """`pairs` pairs, cycling through `kinds`, `parallel` connections at a time."""
    outcome, lock = Outcome(), threading.Lock()
    jobs = iter(range(pairs))
    jobs_lock = threading.Lock()

    def worker() -> None:
        while True:
            with jobs_lock:
                n = next(jobs, None)
            if n is None:
                return
            one_pair(port, kinds[n % len(kinds)], outcome, lock, pipelined=pipelined,
                     timeout_s=timeout_s)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


PUBLIC_BASE = "https://cds.example.org/vitd"
SIGNER = signer("ES384")


def token(path: str) -> str:
    """A valid token for a call to `path` (the JWT's `aud` is the endpoint's public URL)."""
    return SIGNER.sign(aud=f"{PUBLIC_BASE}{path}")


def server_env(tmp: Path) -> dict[str, str]:
    issuers = write_issuers(tmp / "issuers.json", [{"iss": ISS, "jwks": jwks(SIGNER)}])
    return {
        "CDS_TRUSTED_ISSUERS_FILE": issuers,
        "CDS_PUBLIC_BASE_URL": PUBLIC_BASE,
        "DATABASE_URL": f"sqlite:///{tmp / 'store.sqlite3'}",
        "CDS_MAX_BODY_BYTES": str(MAX_BODY),
        "PROMETHEUS_MULTIPROC_DIR": "",
        "REDIS_URL": "",
    }
