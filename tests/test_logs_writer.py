"""Log records handed to the background writer come out whole, in order, with their extras."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from cds_service import logs


@pytest.fixture
def captured_root():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield stream
    logs.stop_background_writer()
    root.handlers[:] = saved
    root.setLevel(level)


def test_background_writer_keeps_extras_and_order(captured_root):
    logs.start_background_writer()
    logs.start_background_writer()  # idempotent: still one writer
    assert len(logging.getLogger().handlers) == 1
    log = logging.getLogger("cds_service.test")
    writer_threads = set()

    def burst(n: int) -> None:
        for i in range(50):
            log.info("request %s", f"{n}-{i}", extra={"route": "/x", "status": 200, "n": n})

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer_threads.add(threading.current_thread().name)
    logs.stop_background_writer()  # flushes what is queued
    lines = [json.loads(line) for line in captured_root.getvalue().splitlines()]
    assert len(lines) == 200
    assert all(line["route"] == "/x" and line["status"] == 200 for line in lines)
    for n in range(4):
        mine = [line["message"] for line in lines if line["n"] == n]
        assert mine == [f"request {n}-{i}" for i in range(50)]


def test_exceptions_do_not_break_the_writer(captured_root):
    logs.start_background_writer()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("cds_service.test").exception("failed")
    logs.stop_background_writer()
    (line,) = [json.loads(x) for x in captured_root.getvalue().splitlines()]
    assert line["message"] == "failed" and line["level"] == "error"


def test_request_threads_take_no_handler_lock(captured_root):
    logs.start_background_writer()
    (queue_handler,) = logging.getLogger().handlers

    def refuse() -> None:
        raise AssertionError("the queue handler took its lock")

    queue_handler.acquire = refuse  # type: ignore[method-assign]
    logging.getLogger("cds_service.test").info("no lock", extra={"route": "/y"})
    logs.stop_background_writer()
    (line,) = [json.loads(x) for x in captured_root.getvalue().splitlines()]
    assert line["message"] == "no lock" and line["route"] == "/y"


def test_records_are_written_in_batches_not_one_write_each(captured_root, monkeypatch):
    writes: list[str] = []
    real_write = captured_root.write
    monkeypatch.setattr(captured_root, "write", lambda text: writes.append(text) or real_write(text))
    logs.start_background_writer(interval_s=60)  # only the final flush writes
    log = logging.getLogger("cds_service.test")
    for i in range(100):
        log.info("request", extra={"i": i})
    assert writes == []  # a request thread never writes, and nothing woke the writer
    logs.stop_background_writer()
    assert len(writes) == 1
    assert [json.loads(line)["i"] for line in writes[0].splitlines()] == list(range(100))


def test_a_writer_that_falls_behind_drops_and_says_so(captured_root, monkeypatch):
    monkeypatch.setattr(logs, "MAX_QUEUED", 10)
    logs.start_background_writer(interval_s=60)
    log = logging.getLogger("cds_service.test")
    for i in range(15):
        log.info("request", extra={"i": i})
    logs.stop_background_writer()
    lines = [json.loads(x) for x in captured_root.getvalue().splitlines()]
    assert [line["i"] for line in lines[:-1]] == list(range(10))
    assert lines[-1]["level"] == "warning" and lines[-1]["dropped"] == 5


def test_logging_goes_on_after_the_writer_stops(captured_root):
    logs.start_background_writer()
    logs.stop_background_writer()
    logging.getLogger("cds_service.test").info("after")
    assert json.loads(captured_root.getvalue())["message"] == "after"


def test_a_handler_without_a_stream_gets_only_records_at_its_level(captured_root):
    got: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    logging.getLogger().addHandler(Collect(level=logging.WARNING))
    logs.start_background_writer(interval_s=60)
    log = logging.getLogger("cds_service.test")
    log.info("routine")
    log.warning("worth a look")
    logs.stop_background_writer()
    assert got == ["worth a look"]
    assert [json.loads(x)["message"] for x in captured_root.getvalue().splitlines()] == [
        "routine",
        "worth a look",
    ]
