"""Which gunicorn worker holds which client connection, read from /proc (issue 19, item 1).

`burst(port, n)` opens `n` connections at once (all connected before the first request is
sent, as a client pool opening at start-up does), makes one `GET /healthz` on each, and
returns the open sockets; `held_per_worker(pids, port)` then counts, for each worker, the
established connections to `port` among its file descriptors. Exact, and independent of CPU
shares or timing.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .keepalive_pairs import ResponseReader

_ESTABLISHED, _LISTEN = "01", "0A"


def _inodes(port: int, state: str = _ESTABLISHED) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, inode = fields[1], fields[9]
            if fields[3] == state and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _sockets(pid: int) -> tuple[dict[int, str], list[int]]:
    """A process's sockets (fd -> inode) and its epoll descriptors, from /proc/PID/fd."""
    sockets: dict[int, str] = {}
    epolls: list[int] = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            sockets[int(fd)] = target[8:-1]
        elif target == "anon_inode:[eventpoll]":
            epolls.append(int(fd))
    return sockets, epolls


def held_per_worker(pids: list[int], port: int) -> dict[int, int]:
    """Established connections to `port` each worker process holds open."""
    inodes = _inodes(port)
    return {pid: sum(inode in inodes for inode in _sockets(pid)[0].values()) for pid in pids}


def burst(port: int, n: int, calls: int = 1, path: str = "/healthz") -> list[socket.socket]:
    """Open `n` connections at once, then `calls` GETs of `path` on each; sockets left open."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    readers = [ResponseReader(sock) for sock in socks]
    for _ in range(calls):
        for sock in socks:
            sock.sendall(request)
        for reader in readers:
            status, _headers = reader.response()
            if status != 200:
                raise AssertionError(f"GET {path} answered {status}")
    return socks


def accepting(pid: int, port: int) -> bool:
    """True when the worker's poll watches the listening socket of `port` (its accept loop
    runs: it has booted and loaded the app). From /proc/PID/fdinfo of its epoll descriptors."""
    listening = _inodes(port, _LISTEN)
    sockets, epolls = _sockets(pid)
    listener_fds = {fd for fd, inode in sockets.items() if inode in listening}
    for fd in epolls:
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("tfd:") and int(line.split()[1]) in listener_fds:
                return True
    return False


def wait_accepting(pids: list[int], port: int, timeout_s: float = 60.0) -> None:
    """Wait until every worker's accept loop runs (a worker still loading the app accepts
    nothing, so a burst sent before would all go to the first one up)."""
    deadline = time.monotonic() + timeout_s
    while not all(accepting(pid, port) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError("a worker never started accepting")
        time.sleep(0.05)
