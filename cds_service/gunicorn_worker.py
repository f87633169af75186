"""The gunicorn worker `cds-service serve` runs: gthread, with a prompt graceful shutdown.

gunicorn 25's gthread worker, once told to stop, waits in one `select()` for the whole
`graceful_timeout` while any keep-alive connection is open, and closes idle keep-alive
connections only after that. EHRs and load balancers keep connections open, so every stop
(a rolling update, a scale-down) would take the full grace period. Here, once stopping:
idle keep-alive connections are closed at once (no request is in flight on them), and the
wait wakes at least every second, so the worker exits as soon as its calls in flight are
answered. (gunicorn 24 and 25 define the overridden methods alike; 23 does not, hence the
`>=24` in pyproject.toml; `tests/test_worker_spread.py` checks every override against the
installed gunicorn.)

No call left in a buffer (issue 15): gthread parks a kept-alive connection until its socket
becomes readable. Bytes of the next request already read off the socket (an HTTP/1.1 client
that pipelines, or the discard of an unread body that read past it) never make it readable,
so that request was closed unanswered after `keepalive` seconds. Such a connection goes
straight back to a thread instead. (The app also discards an unread body before answering,
`body_drain.py`, so a client that waits for each answer is safe under any worker.)

Both workers busy (issue 19): a gthread worker keeps each connection where it was accepted,
so under a few long-lived keep-alive connections (what EHRs and load balancers hold) one
worker could hold them all while the other idled. Each connection is therefore answered at
most `MAX_REQUESTS_PER_CONNECTION` times: the last answer carries `Connection: close` (the
call itself is answered in full, nothing is lost), and the client's new connection goes to
whichever worker accepts it first, so the connections keep redistributing over the workers.

Bursts of new connections (issue 19): when a client opens its pool at once (16 connections
within a millisecond), the worker that wakes first could accept all of them before the other
was scheduled, and keep them for up to 100 calls each. Each worker therefore publishes how
many connections it holds in a small table shared by the workers of one master (`_Peers`,
created in the master by `setup()` before the workers fork). A worker that holds more than a
live peer does not accept the next connection itself but leaves it, for at most
`ACCEPT_DEFER_S`, to the less loaded peer (whose poll woke for the same connection); if no
peer has taken it by then, it accepts it, and waits for no peer again until that peer's loop
has turned since (a stalled peer costs one wait, not one per connection). The listening
socket stays the one the master opened, so no connection is ever queued where no worker will
accept it (no lost call, at shutdown either); the cost is at most `ACCEPT_DEFER_S` more wait
for a connection whose less loaded peer is stalled.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import time

from gunicorn.workers.gthread import ThreadWorker


def _has_read_ahead(conn: object) -> bool:
    """True when the connection's parser holds bytes already read off the socket."""
    buf = getattr(getattr(getattr(conn, "parser", None), "unreader", None), "buf", None)
    if buf is None:
        return False
    with buf.getbuffer() as view:
        return view.nbytes > 0


MAX_REQUESTS_PER_CONNECTION = 100
ACCEPT_DEFER_S = 0.010  # longest a worker leaves a waiting connection to a less loaded peer
ACCEPT_RECHECK_S = 0.0002  # how often it looks again meanwhile
PEER_STALE_S = 2.0  # a peer whose loop has not turned for this long is not waited for
CLAIM_WAIT_S = 1.0  # longest a starting worker waits for the table's lock


class _Peers:
    """Each worker's pid, open connections and last loop turn, shared by one master's workers.

    An anonymous shared mapping made in the master before the workers fork; each worker
    writes only its own slot (from its main thread), so reads need no lock; claiming a slot
    takes one. Aligned 8-byte writes are atomic on the platforms gunicorn runs on.
    """

    SLOTS = 64
    _WIDTH = 3  # cells per slot: pid (0: free), open connections, last loop turn (ns)

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._mem = mmap.mmap(-1, self.SLOTS * self._WIDTH * 8)
        self._cells = memoryview(self._mem).cast("q")
        self._lock = multiprocessing.Lock()

    def claim(self, pid: int) -> int | None:
        """A free slot for `pid` (one whose worker left or stopped turning), or None if full.

        None too when the lock is not free within CLAIM_WAIT_S (a worker killed while holding
        it): the worker then accepts on its own, as with one worker, rather than never start.
        """
        cells, now = self._cells, time.monotonic_ns()
        if not self._lock.acquire(timeout=CLAIM_WAIT_S):
            return None
        try:
            for slot in range(self.SLOTS):
                base = slot * self._WIDTH
                if cells[base] == 0 or now - cells[base + 2] > PEER_STALE_S * 1e9:
                    cells[base + 1], cells[base + 2], cells[base] = 0, now, pid
                    return slot
        finally:
            self._lock.release()
        return None

    def release(self, slot: int) -> None:
        self._cells[slot * self._WIDTH] = 0

    def publish(self, slot: int, connections: int) -> None:
        self._cells[slot * self._WIDTH + 1] = connections

    def turned(self, slot: int) -> None:
        self._cells[slot * self._WIDTH + 2] = time.monotonic_ns()

    def less_loaded_peer(self, slot: int, connections: int, turned_after: float = 0.0) -> bool:
        """True when another live worker holds fewer connections than `connections`.

        Live: its loop turned within PEER_STALE_S, and after `turned_after` (monotonic s).
        """
        cells = self._cells
        fresh = max(time.monotonic_ns() - PEER_STALE_S * 1e9, turned_after * 1e9)
        width = self._WIDTH
        for base in range(0, self.SLOTS * width, width):
            if (cells[base] and base != slot * width and cells[base + 1] < connections
                    and cells[base + 2] > fresh):
                return True
        return False


class GracefulThreadWorker(ThreadWorker):
    max_requests_per_connection = MAX_REQUESTS_PER_CONNECTION
    peers: _Peers | None = None  # made in the master by setup(), inherited by the workers
    _slot: int | None = None
    _nr_conns = 0
    _deferring_since: float | None = None  # when this worker first left a connection to a peer
    _gave_up_at = 0.0  # when a peer last failed to take one in time (not waited for until it turns)
    _paused_until = 0.0  # listener off the poll until then
    _accept_called = False

    @classmethod
    def setup(cls) -> None:
        """Called by gunicorn in the master when it loads the worker class, before any fork."""
        if cls.peers is None or cls.peers.owner != os.getpid():
            cls.peers = _Peers()

    # gthread counts its open connections in `nr_conns` (main thread only); each change is
    # published for the peers.
    @property
    def nr_conns(self) -> int:
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._nr_conns = value
        if self._slot is not None and self.peers is not None:
            self.peers.publish(self._slot, value)

    def run(self) -> None:
        if self.peers is not None:
            self._slot = self.peers.claim(os.getpid())
        try:
            super().run()
        finally:
            self._leave_peers()

    def _leave_peers(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None and self.peers is not None:
            self.peers.release(slot)

    def handle_exit(self, sig, frame) -> None:  # type: ignore[no-untyped-def]
        self._leave_peers()  # stopping: accepts nothing more, so no peer waits for it
        super().handle_exit(sig, frame)

    def accept(self, listener) -> None:  # type: ignore[no-untyped-def]
        self._accept_called = True
        now = time.monotonic()
        if self._should_defer(now):
            if self._deferring_since is None:
                self._deferring_since = now
            self._paused_until = now + ACCEPT_RECHECK_S
            super().set_accept_enabled(False)
            return
        self._deferring_since = None
        super().accept(listener)

    def _should_defer(self, now: float) -> bool:
        if self._slot is None or self.peers is None:
            return False
        if self._deferring_since is not None and now - self._deferring_since >= ACCEPT_DEFER_S:
            self._gave_up_at = now  # no peer took it in time: accept it here, and wait for no
            return False  # peer again until its loop has turned since (it is alive, not stalled)
        return self.peers.less_loaded_peer(self._slot, self.nr_conns, self._gave_up_at)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._paused_until:
            return  # left to a peer for now; the next loop turn after the pause re-enables
        super().set_accept_enabled(enabled)

    def handle_request(self, req, conn):  # type: ignore[no-untyped-def]
        served = getattr(conn, "vitd_served", 0) + 1
        conn.vitd_served = served
        if served >= self.max_requests_per_connection:
            req.must_close = True  # answered in full, with `Connection: close`
        return super().handle_request(req, conn)

    def finish_request(self, conn, fs) -> None:
        kept_alive = self.alive and not fs.cancelled() and fs.exception() is None
        if kept_alive and fs.result() is True and _has_read_ahead(conn):
            conn.set_timeout()
            self.enqueue_req(conn)  # the next request is here already: answer it now
            return
        super().finish_request(conn, fs)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._slot is not None and self.peers is not None:
            self.peers.turned(self._slot)
        timeout = min(timeout, 1.0)
        if self._paused_until:  # wake when the pause ends: the loop's next turn re-enables
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                timeout = min(timeout, wait)
            else:
                self._paused_until = 0.0
        listening, self._accept_called = self._accepting, False
        super().wait_for_and_dispatch_events(timeout)
        if listening and not self._accept_called:
            self._deferring_since = None  # nothing was waiting: a peer took it

    def murder_keepalived(self) -> None:
        if not self.alive:
            for conn in getattr(self, "keepalived_conns", ()):
                conn.timeout = 0
        super().murder_keepalived()
