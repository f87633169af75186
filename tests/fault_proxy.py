"""A fault-injecting TCP proxy on loopback, for tests and `bench/faults.py`.

    with FaultProxy(5432) as proxy:           # in front of 127.0.0.1:5432
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        proxy.set("blackhole")                 # bytes stop flowing, connections stay open
        proxy.set("cut")                       # every connection closed, new ones closed at once
        proxy.set("slow", delay_s=2.0)         # each chunk held back delay_s, both directions
        proxy.set("pass")                      # healed: blackholed connections flow again

Only loopback traffic. Every loop waits at most 50 ms at a time and ends when its connection
ends or the proxy closes, so nothing outlives `close()` by more than that.
"""

from __future__ import annotations

import select
import socket
import threading
import time

TARGET_HOST = "127.0.0.1"
_TICK_S = 0.05
_CHUNK = 64 * 1024
MODES = ("pass", "blackhole", "cut", "slow")


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = TARGET_HOST) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay_s = 0.0
        self._closed = threading.Event()
        self._epoch = 0  # bumped by "cut": connections of an older epoch close
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_TICK_S)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0

    def set(self, mode: str, delay_s: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        with self._lock:
            self.mode, self.delay_s = mode, delay_s
            if mode == "cut":
                self._epoch += 1

    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._closed.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fault-proxy")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "cut":
                _close(client)
                continue
            self._spawn(self._serve, client, self._epoch)

    def _serve(self, client: socket.socket, epoch: int) -> None:
        upstream = None
        try:
            # A blackholed new connection: accepted, never answered, until healed or closed.
            while self.mode == "blackhole" and not self._closed.is_set():
                time.sleep(_TICK_S)
            if self._closed.is_set() or self._epoch != epoch:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                return
            self._pump(client, upstream, epoch)
        finally:
            _close(client)
            if upstream is not None:
                _close(upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket, epoch: int) -> None:
        peers = {client: upstream, upstream: client}
        while not self._closed.is_set() and self._epoch == epoch:
            if self.mode == "blackhole":
                time.sleep(_TICK_S)
                continue
            readable, _, _ = select.select(list(peers), [], [], _TICK_S)
            for sock in readable:
                try:
                    data = sock.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                if self.mode == "slow" and self.delay_s > 0:
                    self._closed.wait(self.delay_s)
                try:
                    peers[sock].sendall(data)
                except OSError:
                    return


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
