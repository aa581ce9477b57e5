"""Concurrent predicts for one pipeline share internal hops; each request still gets its own rows."""

from __future__ import annotations

import asyncio

import pytest

from gateway.coalescing import Coalescer
from gateway.deadlines import Progress, RunOutOfTime, note
from tests.gateway.fakes import TEXTS, train
from tests.support import train as train_real


async def test_concurrent_predicts_share_encoder_and_classifier_calls(gateway_with, fake_encoder, fake_classifier):
    # Not the fixture's 1 s: 40 requests at once, on a test machine busy with the other worker, once took longer.
    async with gateway_with(timeout_s=30) as client:
        assert (await train(client, "intents")).status_code == 201
        encodes, predicts = fake_encoder.calls["POST /v1/encode"], fake_classifier.calls["POST /v1/models/intents/predict"]
        replies = await asyncio.gather(
            *(client.post("/v1/pipelines/intents/predict", json={"texts": [TEXTS[i % 10]]}) for i in range(40))
        )
    assert {r.status_code for r in replies} == {200}
    assert all(len(r.json()["predictions"]) == 1 for r in replies)
    encoder_calls = fake_encoder.calls["POST /v1/encode"] - encodes
    classifier_calls = fake_classifier.calls["POST /v1/models/intents/predict"] - predicts
    assert encoder_calls == classifier_calls < 40 / 4


async def test_merged_requests_get_their_own_rows(gateway):
    await train_real(gateway, "emb", "embedding", "logistic_regression")
    alone = {}
    for text in TEXTS:
        alone[text] = (await gateway.post("/v1/pipelines/emb/predict", json={"texts": [text]})).json()["predictions"][0]
    requests = [TEXTS[(i * 7) % len(TEXTS)] for i in range(30)]
    replies = await asyncio.gather(*(gateway.post("/v1/pipelines/emb/predict", json={"texts": [t]}) for t in requests))
    for text, reply in zip(requests, replies):
        (got,) = reply.json()["predictions"]
        assert got["label"] == alone[text]["label"], text
        assert got["probabilities"] == pytest.approx(alone[text]["probabilities"], abs=1e-6)


async def test_a_failure_reaches_every_merged_request_and_the_next_batch_runs():
    calls = []

    async def run(context, texts):
        calls.append(list(texts))
        await asyncio.sleep(0.01)
        if "boom" in texts:
            raise RuntimeError("upstream failed")
        return context, [t.upper() for t in texts]

    coalescer = Coalescer(run, max_texts=4, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit("k", "ctx", ["a"]))
    await asyncio.sleep(0)
    merged = [asyncio.create_task(coalescer.submit("k", "ctx", [t])) for t in ("b", "boom", "c")]
    later = [asyncio.create_task(coalescer.submit("k", "ctx", [t, t])) for t in ("d", "e")]
    assert await first == ("ctx", ["A"])
    results = await asyncio.gather(*merged, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)  # one batch, one fate
    assert [await task for task in later] == [("ctx", ["D", "D"]), ("ctx", ["E", "E"])]
    assert calls == [["a"], ["b", "boom", "c"], ["d", "d", "e", "e"]]  # max_texts respected


async def test_a_cancelled_request_is_dropped_from_its_batch():
    seen = []

    async def run(context, texts):
        seen.append(list(texts))
        await asyncio.sleep(0.01)
        return None, texts

    coalescer = Coalescer(run, max_texts=16, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit("k", None, ["a"]))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit("k", None, ["gone"]))
    kept = asyncio.create_task(coalescer.submit("k", None, ["kept"]))
    await asyncio.sleep(0)
    gone.cancel()
    await first
    assert await kept == (None, ["kept"])
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert seen == [["a"], ["kept"]]


async def test_a_run_never_outlives_the_latest_deadline_of_its_requests():
    started = []

    async def run(context, texts):
        started.append(list(texts))
        if "stuck" in texts:
            note("encoder http://e", "encode embedding")
            await asyncio.sleep(60)  # an upstream that never answers
        return None, texts

    loop = asyncio.get_running_loop()
    coalescer = Coalescer(run, max_texts=16, max_in_flight=1)
    t0 = loop.time()
    mine, theirs = Progress(stage="read model m"), Progress()
    stuck = asyncio.create_task(coalescer.submit("k", None, ["stuck"], deadline=t0 + 0.2, progress=mine))
    await asyncio.sleep(0)
    assert coalescer.progress("k") is not None
    behind = asyncio.create_task(coalescer.submit("k", None, ["next"], deadline=t0 + 5, progress=theirs))
    await asyncio.sleep(0.05)
    # each caller can tell what it waits on: its run's upstream call, or the one of the run it queues behind
    assert mine.current().stage == theirs.current().stage == "encode embedding"
    with pytest.raises(RunOutOfTime) as failed:
        await stuck
    assert failed.value.progress.stage == "encode embedding" and failed.value.progress.upstream == "encoder http://e"
    assert mine.current().upstream == "encoder http://e"
    assert await behind == (None, ["next"])  # the slot was freed at the deadline, not after 60 s
    assert loop.time() - t0 < 1 and started == [["stuck"], ["next"]]
    assert coalescer.progress("k") is None


async def _closed_loop(coalescer: Coalescer, clients: int, rounds: int) -> None:
    """``clients`` clients, each sending its next request shortly after its last answer, as a load test does."""

    async def client(name: int) -> None:
        for i in range(rounds):
            await coalescer.submit("k", None, [f"{name}-{i}"])
            await asyncio.sleep(0.001)

    await asyncio.gather(*(client(n) for n in range(clients)))


async def test_after_a_merged_run_the_next_waits_for_the_clients_it_answered():
    sizes = []

    async def run(context, texts):
        sizes.append(len(texts))
        await asyncio.sleep(0.06)  # the clients it answers have 18 ms (30 %) to come back
        return None, texts

    await _closed_loop(Coalescer(run, max_texts=64, max_in_flight=1), clients=4, rounds=6)
    # The first client runs alone, the three others merged; then the four go together every time,
    # instead of settling into two groups taking turns (1 and 3, 1 and 3...).
    assert sizes[:2] == [1, 3]
    assert sizes[2:] == [4] * (len(sizes) - 2)


async def test_the_wait_for_company_is_bounded_by_a_share_of_the_last_run():
    async def run(context, texts):
        await asyncio.sleep(0.1)
        return None, texts

    coalescer = Coalescer(run, max_texts=64, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit("k", None, ["a"]))
    await asyncio.sleep(0)
    await asyncio.gather(coalescer.submit("k", None, ["b"]), coalescer.submit("k", None, ["c"]), first)
    # b and c were merged and answered; neither comes back. A newcomer waits for them at most
    # FOLLOW_FRACTION of that run (30 ms here), then runs.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await coalescer.submit("k", None, ["d"])
    assert loop.time() - started < 0.1 + 0.03 + 0.05
