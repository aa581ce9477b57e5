"""Dynamic batching and compute streams: requests share passes, a lone one does not wait, and a
pass shared out between streams computes exactly what one stream would."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from encoder_service.batching import COMPANY_HORIZON_S, INLINE_TOKENIZE_CHARS, Batcher
from encoder_service.runtime import EncoderRuntime, usable_cores
from encoder_service.settings import EncoderSettings
from encoder_service.streams import Streams
from services.waiting import FOLLOW_FRACTION
from tests.encoder_service import forward

TEXTS = [f"sentence number {i} " + "word " * (i % 7) for i in range(40)]


@pytest.fixture(scope="module")
def runtimes(tiny_classifier):
    """The same model with one stream and with three (three threads, one each)."""
    made = {}
    for streams in (1, 3):
        runtime = EncoderRuntime(EncoderSettings(model=str(tiny_classifier), threads=3, streams=streams))
        runtime.load()
        made[streams] = runtime
    yield made
    for runtime in made.values():
        runtime.close()


def test_a_pass_shared_between_streams_equals_one_stream(runtimes):
    items = runtimes[1].tokenize(TEXTS)
    want = ["embedding", "tokens", "probabilities"]
    one, three = forward(runtimes[1], items, want), forward(runtimes[3], items, want)
    for a, b in zip(one, three):
        for name in want:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)


def test_micro_batches_come_in_whole_rounds_of_the_streams(runtimes):
    """Every text once, about micro_batch_tokens each, and never a last micro-batch that one stream
    computes while the others idle: a whole number of rounds, each stream with work."""
    runtime = runtimes[3]
    many = TEXTS * 8
    for n in (3, 7, 16, 40, 100, 320):
        items = runtime.tokenize(many[:n])
        order = sorted(range(len(items)), key=lambda i: items[i].n_tokens)
        chunks = runtime._micro_batches(order, items)
        assert sorted(i for chunk in chunks for i in chunk) == list(range(n))  # each text once
        assert len(chunks) % 3 == 0, (n, [len(c) for c in chunks])
        for chunk in chunks:
            width = max(items[i].n_tokens for i in chunk)
            assert len(chunk) * width <= 1.5 * runtime.settings.micro_batch_tokens or len(chunk) == 1
    lone = runtime.tokenize(["just one"])
    assert runtime._micro_batches([0], lone) == [[0]]


def test_streams_run_every_chunk_once_and_a_lone_chunk_on_the_lead_thread():
    streams = Streams(3, 3)
    seen, threads = [], set()

    def work(chunk):
        seen.append(chunk)
        threads.add(threading.current_thread().name)
        time.sleep(0.01)

    streams.submit(streams.map, work, list(range(12))).result()
    assert sorted(seen) == list(range(12))
    assert len(threads) == 3
    seen.clear(), threads.clear()
    streams.submit(streams.map, work, [0]).result()
    assert seen == [0] and threads == {"encoder-forward_0"}
    streams.shutdown()


def test_a_failing_chunk_fails_the_pass_once_every_stream_has_stopped():
    streams = Streams(2, 2)
    done = []

    def work(chunk):
        time.sleep(0.01)
        if chunk == 0:
            raise ValueError("bad chunk")
        done.append(chunk)

    with pytest.raises(ValueError, match="bad chunk"):
        streams.submit(streams.map, work, list(range(10))).result()
    settled = list(done)
    time.sleep(0.05)
    assert done == settled  # nothing still computing after the pass failed
    assert len(done) < 9  # the remaining chunks were dropped
    streams.shutdown()


async def test_concurrent_requests_share_passes(runtimes):
    runtime = runtimes[3]
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 50}))
    batcher.start()
    try:
        long = ["a longer text " * (INLINE_TOKENIZE_CHARS // 10)]  # tokenized in a worker thread
        results = await asyncio.gather(*(batcher.encode(long if i % 2 else [TEXTS[i]], "embedding") for i in range(16)))
    finally:
        await batcher.stop()
    assert all(len(vectors) == 1 for _, vectors in results)
    assert batcher.batches_run < 16


async def test_a_lone_request_does_not_wait_for_company(runtimes):
    runtime = runtimes[1]
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 60_000}))
    batcher.start()
    try:
        # max_wait_ms is a minute: were the lone request made to wait for company, this would time out.
        _, vectors = await asyncio.wait_for(batcher.encode(["alone"], "embedding"), timeout=20)
    finally:
        await batcher.stop()
    assert len(vectors) == 1 and batcher.batches_run == 1


async def test_concurrent_clients_wait_for_company(runtimes):
    """After a pass shared by several requests, the next pass waits (up to max_wait_ms) for the
    other clients' next requests instead of running the first one alone."""
    runtime = runtimes[1]
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 2_000}))
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(runtime.tokenize([t]), "embedding") for t in TEXTS[:2]))
        assert batcher.batches_run == 1  # two requests, one pass: the clients are concurrent

        async def late():
            await asyncio.sleep(0.2)
            return await batcher.encode([TEXTS[3]], "embedding")

        await asyncio.gather(batcher.encode([TEXTS[2]], "embedding"), late())
    finally:
        await batcher.stop()
    assert batcher.batches_run == 2  # the late request joined the first one's pass


def _slow_passes(runtime: EncoderRuntime, monkeypatch, seconds: float) -> None:
    def slow(items, want, float32=False):
        time.sleep(seconds)
        return runtime._forward(items, want, float32)

    monkeypatch.setattr(runtime, "submit", lambda items, want, float32=False: runtime._streams.submit(slow, items, want, float32))


async def test_a_pass_waits_for_the_clients_the_last_one_answered(runtimes, monkeypatch):
    """Two clients share a pass; a third arrives while it runs. The next pass waits for the two to
    come back rather than run the third alone (which would split the clients into halves that take
    turns), though max_wait_ms is 0."""
    runtime = runtimes[1]
    _slow_passes(runtime, monkeypatch, 0.2)
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 0}))
    sizes = []
    batcher.on_batch = lambda items: sizes.append(len(items))
    batcher.start()

    async def client(text: str, rounds: int, delay: float = 0.0):
        await asyncio.sleep(delay)
        for _ in range(rounds):
            await batcher.encode([text], "embedding")

    try:
        await asyncio.gather(client(TEXTS[0], 2), client(TEXTS[1], 2), client(TEXTS[2], 1, delay=0.05))
    finally:
        await batcher.stop()
    assert sizes == [2, 3]


async def test_clients_that_do_not_come_back_are_not_waited_for_long(runtimes, monkeypatch):
    runtime = runtimes[1]
    _slow_passes(runtime, monkeypatch, 0.2)
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 0}))
    batcher.start()

    async def third():
        await asyncio.sleep(0.05)  # queued while the first pass runs
        started = time.perf_counter()
        await batcher.encode([TEXTS[2]], "embedding")
        return time.perf_counter() - started

    try:
        *_, waited = await asyncio.wait_for(
            asyncio.gather(batcher.encode([TEXTS[0]], "embedding"), batcher.encode([TEXTS[1]], "embedding"), third()),
            timeout=20,
        )
    finally:
        await batcher.stop()
    # the rest of the first pass, at most FOLLOW_FRACTION of it waiting for the two, then its own pass
    assert waited < 0.15 + FOLLOW_FRACTION * 0.2 + 0.2 + 1.0
    assert batcher.batches_run == 2


def test_default_threads_are_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)  # e.g. taskset -c 3
    assert usable_cores() == 1


async def test_a_lone_request_after_a_busy_spell_does_not_wait(runtimes):
    runtime = runtimes[1]
    batcher = Batcher(runtime, runtime.settings.model_copy(update={"max_wait_ms": 60_000}))
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(runtime.tokenize([t]), "embedding") for t in TEXTS[:2]))
        await asyncio.sleep(COMPANY_HORIZON_S + 0.1)  # the concurrent clients are gone
        _, vectors = await asyncio.wait_for(batcher.encode(["alone again"], "embedding"), timeout=20)
    finally:
        await batcher.stop()
    assert len(vectors) == 1 and batcher.batches_run == 2


async def test_texts_asked_in_float32_never_share_a_pass_with_the_served_ones(tiny_bert, monkeypatch):
    """Queued together, float32 and bfloat16 texts go in passes of their own precision, in the order
    they came within each; every answer is its own precision's."""
    settings = EncoderSettings(model=str(tiny_bert), precision="bfloat16", threads=1, max_wait_ms=0)
    runtime = EncoderRuntime(settings)
    runtime.load()
    passes: list[tuple[bool, int]] = []
    real = runtime.submit
    gate = threading.Event()

    def submit(items, want, float32=False):
        passes.append((float32, len(items)))
        return real(items, want, float32)

    monkeypatch.setattr(runtime, "submit", submit)
    runtime._streams.submit(gate.wait, 20)  # holds the lead thread: the first pass waits, the rest queue up behind it
    batcher = Batcher(runtime, settings)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.encode([TEXTS[0]], "embedding"))
        await asyncio.sleep(0.2)
        asked = [(i, i % 3 == 0) for i in range(1, 10)]  # float32 for 3, 6 and 9
        tasks = [asyncio.ensure_future(batcher.encode([TEXTS[i]], "embedding", None, f32)) for i, f32 in asked]
        await asyncio.sleep(0.2)
        gate.set()
        answers = [vectors[0] for _, vectors in await asyncio.gather(first, *tasks)]
    finally:
        await batcher.stop()
    assert passes == [(False, 1), (False, 6), (True, 3)]
    for (i, f32), got in zip(asked, answers[1:]):
        (alone,) = forward(runtime, runtime.tokenize([TEXTS[i]]), ["embedding"], f32)
        assert np.abs(got - alone["embedding"]).max() < 1e-6, (i, f32)
