"""Structured JSON logs on stderr. Callers put only non-patient fields in `extra`."""

from __future__ import annotations

import collections
import copy
import json
import logging
import sys
import threading
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None})
        return json.dumps(out, default=str)


class _MigrationSteps(logging.Filter):
    """Of Alembic's migration log, only the steps it runs ("Running upgrade 0001 -> 0002"):
    its notes on the dialect ("Context impl SQLiteImpl.") tell an operator nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.getMessage().startswith("Running")


_MIGRATION_STEPS = _MigrationSteps()


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No start-up chatter: Alembic announces each of its plugins at INFO on every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    if _MIGRATION_STEPS not in migration.filters:
        migration.addFilter(_MIGRATION_STEPS)


_writer: _BatchWriter | None = None


def start_background_writer(interval_s: float = 0.05) -> None:
    """Hand log records to one writer thread that writes them in batches.

    Request threads only append a record to a deque: no handler lock, no write, and no wake-up
    of another thread. The writer wakes every `interval_s`, formats what accumulated and writes
    it to each handler's stream at once (one write and one flush per batch). A writer woken per
    record (a QueueListener) made every call hand the GIL to it and back; that cost a third of
    the throughput in the benchmark (README, "Performance"). Called in each gunicorn worker
    after the fork (threads do not survive a fork); idempotent.
    """
    global _writer
    if _writer is not None:
        return
    root = logging.getLogger()
    handlers = [h for h in root.handlers if not isinstance(h, _BatchingHandler)]
    _writer = _BatchWriter(handlers, interval_s)
    root.handlers[:] = [_BatchingHandler(_writer)]


def stop_background_writer() -> None:
    """Write out what is queued and stop the writer thread (at worker exit)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        root = logging.getLogger()
        others = [h for h in root.handlers if not isinstance(h, _BatchingHandler)]
        root.handlers[:] = others + [h for h in _writer.handlers if h not in others]
        _writer = None


MAX_QUEUED = 100_000  # records; beyond this (a writer that cannot keep up) new ones are dropped


class _BatchWriter:
    def __init__(self, handlers: list[logging.Handler], interval_s: float) -> None:
        self.handlers = handlers
        self.records: collections.deque[logging.LogRecord] = collections.deque()
        self.dropped = 0
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, record: logging.LogRecord) -> None:
        if len(self.records) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.records.append(record)  # thread-safe, lock-free

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        batch = []
        while self.records:
            batch.append(self.records.popleft())
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            batch.append(
                logging.makeLogRecord(
                    {
                        "name": __name__,
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": "log records dropped: the writer fell behind",
                        "dropped": dropped,
                    }
                )
            )
        if not batch:
            return
        for handler in self.handlers:
            wanted = [r for r in batch if r.levelno >= handler.level and handler.filter(r)]
            stream = getattr(handler, "stream", None)
            if stream is None:  # not a stream: let the handler write each record
                for record in wanted:
                    handler.emit(record)
                continue
            try:
                stream.write("".join(handler.format(r) + "\n" for r in wanted))
                stream.flush()
            except Exception:  # a closed or broken stream must not kill the writer
                continue

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class _BatchingHandler(logging.Handler):
    """Hands records to the `_BatchWriter`; takes no handler lock (the deque is thread-safe)."""

    def __init__(self, writer: _BatchWriter) -> None:
        super().__init__()
        self._writer = writer

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.put(self.prepare(record))

    @staticmethod
    def prepare(record: logging.LogRecord) -> logging.LogRecord:
        """A copy whose message is final, so it can be formatted later on the writer thread."""
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:  # format the traceback now: it cannot cross threads safely later
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record
