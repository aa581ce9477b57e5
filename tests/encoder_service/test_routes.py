"""The encoder's HTTP API on tiny models made by fixtures, served by the real loading code."""

from __future__ import annotations

import numpy as np
import pytest

from encoder_service.app import create_app
from encoder_service.settings import EncoderSettings
from services.codecs import BINARY_CONTENT_TYPE, Ragged, decode_binary
from tests.support import encoder_client

PROBLEM = "application/problem+json"


async def test_outputs_of_a_plain_model(tiny_client):
    r = await tiny_client.get("/v1/outputs")
    assert r.status_code == 200
    outputs = r.json()["outputs"]
    assert sorted(outputs) == ["embedding", "tokens"]
    contract = outputs["embedding"]["contract"]
    assert (contract["kind"], contract["dim"], contract["space"]["pooling"], contract["space"]["normalized"]) == (
        "embedding", 32, "mean", False,
    )


async def test_a_wider_model_declares_its_dim(tiny_bert_wide):
    async with encoder_client(model=str(tiny_bert_wide)) as client:
        r = await client.post("/v1/encode", json={"texts": ["hello"], "output": "embedding"})
        outputs = (await client.get("/v1/outputs")).json()["outputs"]
    assert len(r.json()["data"][0]) == 48
    assert outputs["tokens"]["contract"]["dim"] == 48


async def test_probabilities_follow_id2label(classifier_client):
    outputs = (await classifier_client.get("/v1/outputs")).json()["outputs"]
    assert outputs["probabilities"]["contract"]["labels"] == ["negative", "neutral", "positive"]
    r = await classifier_client.post(
        "/v1/encode", json={"texts": ["thanks for the quick refund", "my parcel is lost"], "output": "probabilities"}
    )
    assert r.status_code == 200
    probs = np.array(r.json()["data"])
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # the same model also serves its pooled embedding and token vectors
    r = await classifier_client.post("/v1/encode", json={"texts": ["hello"], "output": "tokens"})
    assert np.array(r.json()["data"][0]).shape == (3, 32)  # [CLS] hello [SEP]


async def test_probabilities_from_a_model_without_a_head_is_a_4xx(tiny_client):
    r = await tiny_client.post("/v1/encode", json={"texts": ["hello"], "output": "probabilities"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert "no sequence-classification head" in r.json()["detail"]


async def test_binary_frames(tiny_client):
    headers = {"accept": BINARY_CONTENT_TYPE}
    r = await tiny_client.post("/v1/encode", json={"texts": ["hello", "where is my parcel"], "output": "tokens"}, headers=headers)
    assert r.headers["content-type"] == BINARY_CONTENT_TYPE
    frame = decode_binary(r.content)
    assert isinstance(frame.tensor, Ragged)
    assert frame.tensor.lengths.tolist() == frame.meta["token_counts"] == [3, 6]
    as_json = (await tiny_client.post("/v1/encode", json={"texts": ["hello", "where is my parcel"], "output": "tokens"})).json()
    for row, expected in zip(frame.tensor.rows(), as_json["data"]):
        np.testing.assert_allclose(row, np.array(expected), atol=1e-6)
    r = await tiny_client.post("/v1/encode", json={"texts": ["hello"]}, headers=headers)
    assert decode_binary(r.content).tensor.shape == (1, 32)
    assert r.headers["x-seam-contract"] == decode_binary(r.content).meta["contract_id"]


async def test_texts_beyond_the_window_are_flagged(tiny_client):
    r = await tiny_client.post("/v1/encode", json={"texts": ["parcel " * 100, "parcel"]})
    body = r.json()
    assert body["truncated"] == [True, False]
    assert body["token_counts"] == [64, 3]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"texts": [], "output": "embedding"}, 422, "texts"),
        ({"texts": [""]}, 422, "texts[0] is empty"),
        ({"texts": ["   "]}, 422, "texts[0] is empty"),
        ({"texts": ["ok", 3]}, 422, "texts.1"),
        ({"texts": ["ok", None]}, 422, "texts.1"),
        ({"texts": "not a list"}, 422, "texts"),
        ({"texts": ["ok"], "output": "logits"}, 422, "output"),
        ({"texts": ["ok"], "extra": 1}, 422, "extra"),
        ({"output": "embedding"}, 422, "texts"),
        ({"texts": ["ok"] * 9}, 413, "limit is 8"),
        ({"texts": ["x" * 201]}, 413, "201 characters"),
    ],
)
async def test_bad_input_is_a_problem(tiny_bert, body, status, says):
    async with encoder_client(model=str(tiny_bert), max_texts=8, max_chars=200) as client:
        r = await client.post("/v1/encode", json=body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == PROBLEM
        assert says in r.json()["detail"]
        assert (await client.post("/v1/encode", json={"texts": ["still serving"]})).status_code == 200


async def test_malformed_json_and_wrong_content_type(tiny_client):
    r = await tiny_client.post("/v1/encode", content=b'{"texts": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    r = await tiny_client.post("/v1/encode", content=b"texts=hello", headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == PROBLEM


async def test_not_ready_until_the_model_is_loaded(tiny_bert):
    import httpx

    app = create_app(EncoderSettings(model=str(tiny_bert)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as client:
            first = await client.get("/readyz")
            assert (await client.get("/healthz")).status_code == 200
            await app.state.loading
            assert (await client.get("/readyz")).status_code == 200
    assert first.status_code == 503 and first.headers["content-type"] == PROBLEM


async def test_a_missing_model_folder_is_reported_by_readyz(tmp_path):
    async with encoder_client(model=str(tmp_path / "nowhere")) as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert "nowhere" in r.json()["detail"]


async def test_full_queue_answers_429(tiny_bert):
    async with encoder_client(model=str(tiny_bert), max_queue=2) as client:
        r = await client.post("/v1/encode", json={"texts": ["a", "b", "c"]})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
