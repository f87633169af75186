"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive), the same for every target.

`run(host, port, jobs, connections)` sends the jobs over `connections` persistent connections,
each connection sending its next request as soon as the previous answer is read (like wrk), and
returns every request's latency and status. A job is (path, headers, body): headers may differ
per request (a fresh JWT each), the body is shared bytes. Responses are read by Content-Length
(both targets send it); a connection the server closes is reopened.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    path: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Result:
    wall_s: float
    latencies_s: list[float]
    statuses: dict[int, int]
    sample_body: bytes = b""

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.count / self.wall_s

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    def summary(self) -> str:
        ok = self.statuses.get(200, 0)
        return (
            f"{self.count} requests in {self.wall_s:.2f} s: {self.throughput:,.0f} req/s, "
            f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms, "
            f"mean {statistics.fmean(self.latencies_s) * 1000:.1f} ms; "
            f"statuses {dict(sorted(self.statuses.items()))} ({ok}/{self.count} 200)"
        )


def _request_bytes(host: str, port: int, job: Job) -> bytes:
    lines = [
        f"POST {job.path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(job.body)}",
        *(f"{name}: {value}" for name, value in job.headers.items()),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def _connection(
    host: str, port: int, jobs: Iterator[Job], result: Result, lock: asyncio.Lock
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for job in jobs:  # a shared iterator: each job is taken by exactly one connection
            head = _request_bytes(host, port, job)
            started = time.perf_counter()
            writer.write(head)
            writer.write(job.body)
            await writer.drain()
            status, body, close = await _read_response(reader)
            elapsed = time.perf_counter() - started
            async with lock:
                result.latencies_s.append(elapsed)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if not result.sample_body:
                    result.sample_body = body
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _run(host: str, port: int, jobs: Iterable[Job], connections: int) -> Result:
    result = Result(wall_s=0.0, latencies_s=[], statuses={})
    lock = asyncio.Lock()
    shared = iter(jobs)
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(host, port, shared, result, lock) for _ in range(connections))
    )
    result.wall_s = time.perf_counter() - started
    return result


def run(host: str, port: int, jobs: Iterable[Job], connections: int) -> Result:
    return asyncio.run(_run(host, port, jobs, connections))
