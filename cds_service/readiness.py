"""Readiness from a background check (contract §6): `/readyz` answers from the last result.

One thread per worker runs every check (the database, and Redis when it is the replay store)
every `interval_s`, each bounded by its store's own time limits, and keeps the outcome. The
endpoint reads it and never waits on a store itself, so a blackholed database makes `/readyz`
say 503 at once instead of hanging. A result older than `stale_s` counts as a failure (the
checker itself is stuck). The thread starts with the first question (or `start()`, which each
gunicorn worker calls once loaded) and stops with `close()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from .store import describe_error

log = logging.getLogger(__name__)


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Callable[[], object]],
        *,
        interval_s: float = 1.0,
        stale_s: float = 5.0,
        first_wait_s: float = 0.9,
    ) -> None:
        self._checks = dict(checks)
        self._interval_s = interval_s
        self._stale_s = stale_s
        self._first_wait_s = first_wait_s
        self._failing: tuple[str, ...] = ("not checked yet",)
        self._checked_at: float | None = None
        self._first = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def state(self) -> tuple[bool, tuple[str, ...]]:
        """(ready, names of the failing stores), from the last background check."""
        self.start()
        self._first.wait(self._first_wait_s)
        checked_at, failing = self._checked_at, self._failing
        if checked_at is None:
            return False, failing
        if time.monotonic() - checked_at > self._stale_s:
            return False, ("readiness check stalled",)
        return not failing, failing

    def start(self) -> None:
        """Start the background check (idempotent; `state()` starts it too)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
                self._thread.start()

    def check_once(self) -> None:
        failing = []
        for name, check in self._checks.items():
            try:
                check()
            except Exception as exc:
                failing.append(name)
                if name not in self._failing:
                    log.warning(
                        "store unreachable", extra={"store": name, "cause": describe_error(exc)}
                    )
        recovered = [name for name in self._failing if name in self._checks and name not in failing]
        if recovered:
            log.info("store reachable again", extra={"stores": recovered})
        self._failing, self._checked_at = tuple(failing), time.monotonic()
        self._first.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.check_once()
            self._stopping.wait(self._interval_s)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
