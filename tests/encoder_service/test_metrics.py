"""The encoder's own metrics: batch sizes, tokens and texts encoded, truncations, queue depth."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    """Unlabelled samples by name (labelled ones keyed ``name{k=v,...}``)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            found[key] = s.value
    return found


async def test_batches_tokens_and_queue_depth_are_scraped(tiny_client):
    texts = ["where is my parcel", "hello", "parcel " * 100]
    encoded = await asyncio.gather(*(tiny_client.post("/v1/encode", json={"texts": [t]}) for t in texts))
    tokens = sum(r.json()["token_counts"][0] for r in encoded)
    before = samples((await tiny_client.get("/metrics")).text)
    assert before["seam_encoder_texts_total"] == 3
    assert before["seam_encoder_tokens_total"] == tokens
    assert before["seam_encoder_truncated_texts_total"] == 1
    assert before["seam_encoder_batch_texts_sum"] == 3 and 1 <= before["seam_encoder_batch_texts_count"] <= 3
    assert before["seam_encoder_batch_tokens_sum"] == tokens
    assert before["seam_encoder_queue_depth"] == 0
    assert before["seam_http_requests_total{method=POST,route=/v1/encode,status=200}"] == 3
    # OIP and OpenAI requests share the batcher, so they count too.
    await tiny_client.post("/v2/models/embedding/infer",
                           json={"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]})
    after = samples((await tiny_client.get("/metrics")).text)
    assert after["seam_encoder_texts_total"] == 4
    assert after["seam_http_requests_total{method=POST,route=/v2/models/{name}/infer,status=200}"] == 1
