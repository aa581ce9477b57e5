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
    """Every request is counted (``requests``, ``errors``, ``statuses``); the throughput and the
    latencies are those of the steady state where :func:`run_load` measured one (``window_s``)."""

    requests: int = 0
    texts: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    window_s: float = 0.0  # the steady state's length (the clients' mean); 0: none measured, the whole run counts
    window_texts: int = 0  # texts answered in it
    answers: list[tuple[int, float, float, int]] = field(default_factory=list)  # (client, at, ms, texts) per request

    @property
    def throughput(self) -> float:
        if self.window_s:
            return self.window_texts / self.window_s
        return self.texts / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def keep_window(self, opened: float, end: float) -> None:
        """The steady state between ``opened`` and ``end`` (perf_counter times), in whole requests: each
        client's from its last answer by ``opened`` to its last answer by ``end``. A batching server
        answers a pass's requests together, so a window cut at fixed times would count part of a pass
        for the whole of its time; a client's own answers cut its time into whole round trips."""
        spans, inside = [], []
        for client in {c for c, _, _, _ in self.answers}:
            own = [(at, ms, texts) for c, at, ms, texts in self.answers if c == client and at <= end]
            first = max((i for i, (at, _, _) in enumerate(own) if at <= opened), default=None)
            if first is None or first == len(own) - 1:
                continue
            spans.append(own[-1][0] - own[first][0])
            inside += own[first + 1:]
        if spans:
            self.window_s = sum(spans) / len(spans)
            self.window_texts = sum(texts for _, _, texts in inside)
            self.latencies_ms = [ms for _, ms, _ in inside]


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

    def __init__(self, encoded: list[tuple[str, int, bytes]], result: LoadResult, texts_per_request: int,
                 client: int = 0) -> None:
        self.encoded, self.result, self.texts_per_request, self.client = encoded, result, texts_per_request, client

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
        now = time.perf_counter()
        texts = self.texts_per_request if status == 200 else 0
        result.latencies_ms.append((now - start) * 1000)
        result.answers.append((self.client, now, (now - start) * 1000, texts))
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.requests += 1
        result.texts += texts
        result.errors += status != 200


async def run_load(url: str, bodies: list[dict], *, concurrency: int, max_requests: int, max_seconds: float,
                   texts_per_request: int) -> LoadResult:
    """``concurrency`` clients, each on its own connection, send requests back to back (cycling
    through ``bodies``), and the steady state is measured: from the moment every client has had its
    first answer (the ramp-up: connections opened, the first passes gathered) for ``max_seconds``,
    or until ``max_requests`` were sent, in whole round trips (:meth:`LoadResult.keep_window`). The
    requests in flight at its end finish, counted in ``requests`` and ``errors`` only: the drain,
    where clients stop coming back, is not the load measured. A ramp-up longer than ``max_seconds``
    ends the run with no steady state: then the whole run counts."""
    encoded = [_request_bytes(url, b) for b in bodies]
    result = LoadResult()
    counter = iter(range(max_requests))
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + max_seconds  # for the ramp-up; then for the steady state from its start
    answered: set[int] = set()
    opened: float | None = None
    exhausted: float | None = None

    async def client(me: int) -> None:
        nonlocal deadline, opened, exhausted
        async with _Client(encoded, result, texts_per_request, me) as conn:
            while time.perf_counter() <= deadline:
                i = next(counter, None)
                if i is None:
                    exhausted = exhausted or time.perf_counter()
                    break
                await conn.send(i)
                if opened is None:
                    answered.add(me)
                    if len(answered) == concurrency:
                        opened = result.answers[-1][1]  # this very answer's time
                        deadline = opened + max_seconds

    await asyncio.gather(*(client(me) for me in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.client_cpu_s = time.process_time() - cpu0
    if opened is not None:
        result.keep_window(opened, min(deadline, exhausted or deadline))
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
