"""When a request arrived, so that its time budget counts from then (contract §6 "Isolation").

gunicorn's gthread worker hands a connection to a thread only when one is free; time spent
waiting for it is part of what the EHR waits. `ArrivalThreadWorker` (the worker class
`cds-service serve` runs) stamps each connection when it is queued for a thread (a new
connection when accepted, a keep-alive one when its next request is readable) and passes the
stamp to the thread that handles it; `arrived()` reads it in the app. Without gunicorn (tests,
`cds-service invoke`) there is no stamp and the app uses the time it first sees the request.
"""

from __future__ import annotations

import threading
import time

from .gunicorn_worker import GracefulThreadWorker

_local = threading.local()


def arrived() -> float | None:
    """`time.monotonic()` when the current request was queued for this thread, if known."""
    return getattr(_local, "arrived", None)


class ArrivalThreadWorker(GracefulThreadWorker):
    def enqueue_req(self, conn) -> None:  # type: ignore[no-untyped-def]
        conn.vitd_arrived = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):  # type: ignore[no-untyped-def]
        _local.arrived = getattr(conn, "vitd_arrived", None)
        try:
            return super().handle(conn)
        finally:
            _local.arrived = None
