"""The benchmark's load generator against a minimal HTTP/1.1 server on 127.0.0.1: what it counts, and
that the paired single-client mode takes turns with its reference."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import LoadResult, run_load, run_paired
from tests.rawhttp import read_request


@pytest.fixture
async def server():
    """Answers every request with 200, or 503 for a path ending in /busy; logs each request."""
    log: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await read_request(reader):
                log.append("request")
                status = b"503 Service Unavailable" if request[1].endswith("/busy") else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", log
    srv.close()
    await srv.wait_closed()


async def test_run_load_counts_texts_of_successful_requests_only(server):
    url, log = server
    ok = await run_load(url + "/v1/encode", [{"texts": ["a", "b"]}], concurrency=3, max_requests=30, max_seconds=10,
                        texts_per_request=2)
    assert (ok.requests, ok.texts, ok.errors, ok.statuses) == (30, 60, 0, {200: 30})
    busy = await run_load(url + "/busy", [{"texts": ["a"]}], concurrency=2, max_requests=10, max_seconds=10,
                          texts_per_request=1)
    assert (busy.requests, busy.texts, busy.errors, busy.statuses) == (10, 0, 10, {503: 10})
    assert len(log) == 40


async def test_run_load_measures_a_steady_state_of_whole_round_trips(server):
    url, _ = server
    result = await run_load(url + "/v1/encode", [{"texts": ["a"]}], concurrency=4, max_requests=100_000, max_seconds=0.5,
                            texts_per_request=1)
    assert result.window_s > 0 and 0 < result.window_texts < result.texts
    assert result.throughput == result.window_texts / result.window_s
    assert len(result.latencies_ms) == result.window_texts < result.requests  # the window's answers only


def test_the_window_opens_and_closes_on_each_clients_own_answers():
    """Two clients answered in bursts (a batching server): client 0 at 1, 2, 3, 4 and 5 s, client 1 at
    1.5, 2.5, 3.5 and 4.5 s, 2 texts each. The window from 2.2 s to 4.2 s holds, for client 0, its
    round trips from 2 s to 4 s; for client 1, from 1.5 s to 3.5 s: 4 answers in 2 s each."""
    result = LoadResult(answers=[(0, t, 1000.0, 2) for t in (1, 2, 3, 4, 5)] + [(1, t, 900.0, 2) for t in (1.5, 2.5, 3.5, 4.5)])
    result.keep_window(2.2, 4.2)
    assert (result.window_s, result.window_texts, result.throughput) == (2.0, 8, 4.0)
    assert sorted(result.latencies_ms) == [900.0, 900.0, 1000.0, 1000.0]
    empty = LoadResult(answers=[(0, 1.0, 5.0, 1)], texts=1, wall_s=2.0)
    empty.keep_window(1.0, 3.0)  # no round trip inside: the whole run counts
    assert (empty.window_s, empty.throughput) == (0.0, 0.5)


async def test_run_paired_takes_turns_with_its_reference(server):
    url, log = server

    def reference(n: int) -> list[float]:
        log.extend(["reference"] * n)
        return [1.0] * n

    result, reference_ms = await run_paired(url + "/v1/encode", [{"texts": ["a"]}], reference=reference,
                                            max_requests=10, max_seconds=30, texts_per_request=1, round_size=4)
    assert log == (["request"] * 4 + ["reference"] * 4) * 2 + ["request"] * 2 + ["reference"] * 2
    assert result.requests == 10 and result.errors == 0 and reference_ms == [1.0] * 10
    # Its time is the client's own, without the reference's turns.
    assert result.wall_s == pytest.approx(sum(result.latencies_ms) / 1000)


def test_load_targets_loopback_only():
    with pytest.raises(AssertionError, match="loopback"):
        asyncio.run(run_load("http://example.org/v1/encode", [{"texts": ["a"]}], concurrency=1, max_requests=1,
                             max_seconds=1, texts_per_request=1))
