"""Structured JSON logs on stderr. Callers put only non-patient fields in `extra`."""

from __future__ import annotations

import copy
import json
import logging
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener

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


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


_listener: QueueListener | None = None


def start_background_writer() -> None:
    """Hand log records to one writer thread instead of writing them in the request thread.

    With several request threads, a handler writing to stderr under its lock makes the threads
    queue up behind each write (and the GIL hand-off after it); a queue put does not. Called in
    each gunicorn worker after the fork (threads do not survive a fork); idempotent.
    """
    global _listener
    if _listener is not None:
        return
    root = logging.getLogger()
    handlers = [h for h in root.handlers if not isinstance(h, QueueHandler)]
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(records, *handlers, respect_handler_level=True)
    _listener.start()
    root.handlers[:] = [_ExtraKeepingQueueHandler(records)]


def stop_background_writer() -> None:
    """Write out what is queued and stop the writer thread (at worker exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


class _ExtraKeepingQueueHandler(QueueHandler):
    """QueueHandler whose `prepare` leaves the record's `extra` fields for the JSON formatter.

    It takes no handler lock: the queue is thread-safe, and under load that lock was itself a
    place where request threads queued up (each wait also a wait for the GIL).
    """

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:  # format the traceback now: it cannot cross threads safely later
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record
