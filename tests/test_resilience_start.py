"""`cds-service serve` with its database unreachable or unusable ends with one line naming the
database and the cause (contract §6: never a silent hang, never a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .fault_proxy import FaultProxy
from .server_process import free_port

GUARD_S = 60  # a hang fails here; the bounded start takes a few seconds


def serve(database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "CDS_AUTH_DISABLED": "1",
           "CDS_DB_CONNECT_TIMEOUT_S": "1"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=GUARD_S,
    )  # fmt: skip


def assert_one_line_reason(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: database ")
    for word in words:
        assert word in last
    return last


def test_refused_database_ends_with_one_line_and_no_password():
    port = free_port()  # nothing listens there
    last = assert_one_line_reason(
        serve(f"postgresql://postgres:s3cret@127.0.0.1:{port}/test"), "OperationalError"
    )
    assert "s3cret" not in last


@pytest.mark.postgres
def test_blackholed_database_ends_with_one_line():
    with FaultProxy(5432) as proxy:
        proxy.set("blackhole")
        assert_one_line_reason(
            serve(f"postgresql://postgres@127.0.0.1:{proxy.port}/test"), "OperationalError"
        )


def test_unwritable_sqlite_path_ends_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_one_line_reason(serve(f"sqlite:///{blocker}/sub/store.sqlite3"), "Error")


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_serve_caps_malloc_arenas_unless_the_environment_says_otherwise(monkeypatch):
    import ctypes

    from cds_service import cli

    libc = _FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    cli._few_malloc_arenas()
    assert libc.calls == [(-8, 2)]  # M_ARENA_MAX
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    cli._few_malloc_arenas()
    assert libc.calls == [(-8, 2)]  # the operator's value stands
