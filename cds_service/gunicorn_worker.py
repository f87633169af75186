"""The gunicorn worker `cds-service serve` runs: gthread, with a prompt graceful shutdown.

gunicorn 25's gthread worker, once told to stop, waits in one `select()` for the whole
`graceful_timeout` while any keep-alive connection is open, and closes idle keep-alive
connections only after that. EHRs and load balancers keep connections open, so every stop
(a rolling update, a scale-down) would take the full grace period. Here, once stopping:
idle keep-alive connections are closed at once (no request is in flight on them), and the
wait wakes at least every second, so the worker exits as soon as its calls in flight are
answered. (On gunicorn versions without these methods the overrides are simply unused.)

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
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


def _has_read_ahead(conn: object) -> bool:
    """True when the connection's parser holds bytes already read off the socket."""
    buf = getattr(getattr(getattr(conn, "parser", None), "unreader", None), "buf", None)
    if buf is None:
        return False
    with buf.getbuffer() as view:
        return view.nbytes > 0


MAX_REQUESTS_PER_CONNECTION = 100


class GracefulThreadWorker(ThreadWorker):
    max_requests_per_connection = MAX_REQUESTS_PER_CONNECTION

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
        super().wait_for_and_dispatch_events(min(timeout, 1.0))

    def murder_keepalived(self) -> None:
        if not self.alive:
            for conn in getattr(self, "keepalived_conns", ()):
                conn.timeout = 0
        super().murder_keepalived()
