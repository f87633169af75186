"""Run `cds-service serve` (real gunicorn) as a child process on a free loopback port.

Used by the serving tests and by `bench/`:

    with ServerProcess(env={"CDS_AUTH_DISABLED": "1", "DATABASE_URL": ...}, workers=2) as srv:
        requests.get(f"{srv.base_url}/healthz")
    srv.output  # everything it printed; srv.returncode
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        *,
        env: Mapping[str, str],
        workers: int = 2,
        threads: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 30.0,
        argv: Sequence[str] | None = None,
        port: int | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.workers = workers
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env}
        command = list(argv) if argv is not None else [
            sys.executable, "-m", "cds_service.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            *(["--threads", str(threads)] if threads else []),
            *extra_args,
        ]  # fmt: skip
        self._argv = [*launcher, *command]  # launcher: a wrapper such as valgrind, or nothing
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""
        self.returncode: int | None = None

    def start(self) -> ServerProcess:
        # A file, not a pipe: a pipe nobody drains would block a chatty server.
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            self._argv, env=self._env, stdout=self._log, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                requests.get(f"{self.base_url}/healthz", timeout=1)
                if len(self.worker_pids()) >= self.workers:  # all forked, not just the first
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a worker still booting
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start:\n{self.output}") from None
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (children of the master), from /proc."""
        assert self.proc is not None
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [int(pid) for pid in f.read().split()]

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then wait for the exit (kill after `stop_timeout_s`); keeps the output."""
        if self.proc is None or self.returncode is not None:
            return
        if self.proc.poll() is None:
            self.terminate()
        try:
            self.proc.wait(timeout=self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.seek(0)
        self.output = self._log.read()
        self._log.close()
        self.returncode = self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
