"""OpenAI-compatible /v1/embeddings on the encoder, in process. (The official ``openai`` client drives a
real process in tests/integration/test_clients.py.)"""

from __future__ import annotations

import base64

import numpy as np
import pytest

TEXTS = ["where is my parcel", "I was charged twice"]


async def test_response_has_openai_shape_and_usage(tiny_client, tiny_bert):
    model = tiny_bert.name
    r = await tiny_client.post("/v1/embeddings", json={"model": model, "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == model
    assert [(d["object"], d["index"], d["truncated"]) for d in body["data"]] == [("embedding", 0, False), ("embedding", 1, False)]
    encoded = (await tiny_client.post("/v1/encode", json={"texts": TEXTS})).json()
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], encoded["data"], atol=1e-6)
    assert body["usage"] == {"prompt_tokens": sum(encoded["token_counts"]), "total_tokens": sum(encoded["token_counts"])}


async def test_base64_is_little_endian_float32(tiny_client, tiny_bert):
    floats = (await tiny_client.post("/v1/embeddings", json={"model": tiny_bert.name, "input": "hello"})).json()
    packed = (await tiny_client.post(
        "/v1/embeddings", json={"model": tiny_bert.name, "input": "hello", "encoding_format": "base64"}
    )).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, floats["data"][0]["embedding"], atol=1e-7)
    assert len(vector) == 32


async def test_models_lists_the_served_model(tiny_client, tiny_bert):
    body = (await tiny_client.get("/v1/models")).json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [tiny_bert.name]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"model": "text-embedding-3-small", "input": "hi"}, 404, "not 'text-embedding-3-small'"),
        ({"model": "{model}", "input": [[1, 2, 3]]}, 422, "token ids"),
        ({"model": "{model}", "input": [1, 2, 3]}, 422, "token ids"),
        ({"model": "{model}", "input": []}, 422, "empty list"),
        ({"model": "{model}", "input": ""}, 422, "texts[0] is empty"),
        ({"model": "{model}", "input": "hi", "dimensions": 8}, 422, "32 wide"),
        ({"model": "{model}", "input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": "hi"}, 422, "model"),
    ],
)
async def test_refusals_carry_an_openai_error_object(tiny_client, tiny_bert, body, status, says):
    if body.get("model") == "{model}":
        body = {**body, "model": tiny_bert.name}
    r = await tiny_client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["code"] == r.json()["type"].rsplit("/", 1)[-1]
