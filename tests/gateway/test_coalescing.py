"""Concurrent predicts for one pipeline share internal hops; each request still gets its own rows."""

from __future__ import annotations

import asyncio

import pytest

from gateway.coalescing import Coalescer
from tests.gateway.test_app import gateway, train as train_real, world  # noqa: F401 - fixtures
from tests.gateway.test_pipelines import TEXTS, train


async def test_concurrent_predicts_share_encoder_and_classifier_calls(client, fake_encoder, fake_classifier):
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
