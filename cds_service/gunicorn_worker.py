"""The gunicorn worker `cds-service serve` runs: gthread, with a prompt graceful shutdown.

gunicorn 25's gthread worker, once told to stop, waits in one `select()` for the whole
`graceful_timeout` while any keep-alive connection is open, and closes idle keep-alive
connections only after that. EHRs and load balancers keep connections open, so every stop
(a rolling update, a scale-down) would take the full grace period. Here, once stopping:
idle keep-alive connections are closed at once (no request is in flight on them), and the
wait wakes at least every second, so the worker exits as soon as its calls in flight are
answered. (On gunicorn versions without these methods the overrides are simply unused.)
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class GracefulThreadWorker(ThreadWorker):
    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        super().wait_for_and_dispatch_events(min(timeout, 1.0))

    def murder_keepalived(self) -> None:
        if not self.alive:
            for conn in getattr(self, "keepalived_conns", ()):
                conn.timeout = 0
        super().murder_keepalived()
