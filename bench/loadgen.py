"""A deliberately light load generator: raw HTTP/1.1 over asyncio streams with keep-alive and
pre-encoded requests, so it takes little of the CPU it measures (its own CPU time is reported).
Bounded in requests and time; loopback only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    requests: int = 0
    texts: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.texts / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def _request_bytes(url: str, body: dict) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "load tests target loopback only"
    payload = json.dumps(body).encode()
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n").encode()
    return parts.hostname, parts.port or 80, head + payload


async def read_body(reader: asyncio.StreamReader) -> bytes:
    """What follows an HTTP/1.1 start line: the headers, then the body their Content-Length says."""
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


async def _read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    await read_body(reader)
    return status


class _Client:
    """One keep-alive connection sending pre-encoded requests and timing each round trip."""

    def __init__(self, encoded: list[tuple[str, int, bytes]], result: LoadResult, texts_per_request: int) -> None:
        self.encoded, self.result, self.texts_per_request = encoded, result, texts_per_request

    async def __aenter__(self) -> _Client:
        host, port, _ = self.encoded[0]
        self.reader, self.writer = await asyncio.open_connection(host, port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def send(self, i: int) -> None:
        result = self.result
        start = time.perf_counter()
        self.writer.write(self.encoded[i % len(self.encoded)][2])
        status = await _read_response(self.reader)
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.requests += 1
        if status == 200:
            result.texts += self.texts_per_request
        else:
            result.errors += 1


async def run_load(url: str, bodies: list[dict], *, concurrency: int, max_requests: int, max_seconds: float,
                   texts_per_request: int) -> LoadResult:
    """``concurrency`` clients, each on its own connection, send requests back to back (cycling
    through ``bodies``) until ``max_requests`` were sent or ``max_seconds`` passed."""
    encoded = [_request_bytes(url, b) for b in bodies]
    result = LoadResult()
    counter = iter(range(max_requests))
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + max_seconds

    async def client() -> None:
        async with _Client(encoded, result, texts_per_request) as conn:
            for i in counter:
                if time.perf_counter() > deadline:
                    break
                await conn.send(i)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.client_cpu_s = time.process_time() - cpu0
    return result


async def run_paired(url: str, bodies: list[dict], *, reference: Callable[[int], list[float]], max_requests: int,
                     max_seconds: float, texts_per_request: int, round_size: int) -> tuple[LoadResult, list[float]]:
    """A single client, in turns with a reference measured in the same moments: ``round_size``
    requests back to back, then ``reference(n)`` times as many of its own (the in-process limit
    encoding lone texts, say), and again, until ``max_requests`` or ``max_seconds``. On a
    machine whose speed drifts from minute to minute, a latency and its reference taken minutes
    apart differ by more than the few milliseconds a target allows; taken in turns, they
    see the same machine. Returns the requests' result and the reference's latencies (ms)."""
    encoded = [_request_bytes(url, b) for b in bodies]
    result, reference_ms = LoadResult(), []
    cpu0 = time.process_time()
    deadline = time.perf_counter() + max_seconds
    sent = 0
    async with _Client(encoded, result, texts_per_request) as conn:
        while sent < max_requests and time.perf_counter() < deadline:
            turn = min(round_size, max_requests - sent)
            for _ in range(turn):
                await conn.send(sent)
                sent += 1
            reference_ms += reference(turn)  # blocks: nothing else runs on this loop meanwhile
    result.client_cpu_s = time.process_time() - cpu0
    # The client's own time, without the reference's turns: its throughput is that of a lone client.
    result.wall_s = sum(result.latencies_ms) / 1000
    return result, reference_ms
