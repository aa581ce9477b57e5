"""The gateway wired in process to the REAL encoder and classifier apps (tiny models, ASGI transports).

An encoder "restart with another model" is a new encoder app behind the same transport.
"""

from __future__ import annotations

import asyncio
import csv
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest

from classifier_service.app import create_app as create_classifier
from classifier_service.settings import ClassifierSettings
from encoder_service.app import create_app as create_encoder
from encoder_service.settings import EncoderSettings
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.processes import ROOT

ENCODER_URL = "http://encoder.local"
CLASSIFIER_URL = "http://classifier.local"


def sample(n: int = 48) -> tuple[list[str], list[str]]:
    """The first ``n`` rows of the sample data, every label kept."""
    with (ROOT / "seam" / "data" / "support_intents.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    picked = [row for i in range(n) for group in by_label.values() if i < len(group) for row in [group[i]]][:n]
    return [r["text"] for r in picked], [r["label"] for r in picked]


class SwappableTransport(httpx.AsyncBaseTransport):
    """An upstream address whose app can be replaced: a restart with another model, in process."""

    def __init__(self) -> None:
        self.target: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.target is None:
            raise httpx.ConnectError("nothing listens here", request=request)
        return await self.target.handle_async_request(request)


class World:
    """Real encoder and classifier apps, and the gateway in front of them."""

    def __init__(self, stack: AsyncExitStack, store: Path) -> None:
        self.stack = stack
        self.store = store
        self.encoder = SwappableTransport()
        self.classifier = SwappableTransport()
        self.encoder_model: Path | None = None
        self._encoder_scope: AsyncExitStack | None = None

    async def serve_encoder(self, model: Path) -> None:
        if self._encoder_scope is not None:
            await self._encoder_scope.aclose()
        scope = AsyncExitStack()
        app = create_encoder(EncoderSettings(model=str(model), threads=1, max_wait_ms=0))
        await scope.enter_async_context(app.router.lifespan_context(app))
        for _ in range(600):
            if app.state.runtime.ready or app.state.load_error:
                break
            await asyncio.sleep(0.05)
        assert app.state.runtime.ready, app.state.load_error
        self._encoder_scope, self.encoder_model = scope, model
        self.encoder.target = httpx.ASGITransport(app=app)

    async def stop_encoder(self) -> None:
        self.encoder.target = None
        if self._encoder_scope is not None:
            await self._encoder_scope.aclose()
            self._encoder_scope = None

    async def start_classifier(self) -> None:
        app = create_classifier(ClassifierSettings(store=self.store, torch_threads=1))
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.classifier.target = httpx.ASGITransport(app=app)

    async def close(self) -> None:
        await self.stop_encoder()


@pytest.fixture
async def world(tmp_path, tiny_bert):
    async with AsyncExitStack() as stack:
        w = World(stack, tmp_path / "models")
        stack.push_async_callback(w.close)
        await w.start_classifier()
        await w.serve_encoder(tiny_bert)
        yield w


@pytest.fixture
async def gateway(world):
    settings = GatewaySettings(encoder_url=ENCODER_URL, classifier_url=CLASSIFIER_URL, recheck_interval_s=0,
                               train_chunk_size=16)
    app = create_app(settings, encoder_transport=world.encoder, classifier_transport=world.classifier)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client


async def train(client, name, feature="embedding", estimator=None, **extra):
    texts, labels = sample()
    body = {"texts": texts, "labels": labels, "feature": feature, "estimator": estimator, **extra}
    response = await client.post(f"/v1/pipelines/{name}/train", json=body)
    assert response.status_code == 201, response.text
    return response.json()


PROBE = ["I was charged twice", "where is my parcel", "I forgot my password"]


async def predict(client, name, texts=PROBE):
    return await client.post(f"/v1/pipelines/{name}/predict", json={"texts": texts})


async def test_three_patterns_through_the_real_services(gateway, tiny_bert):
    classes = sorted(set(sample()[1]))
    emb = await train(gateway, "emb", "embedding", "logistic_regression")
    assert emb["version"] == 1 and emb["classes"] == classes
    assert emb["input_contract"]["kind"] == "embedding" and emb["input_contract"]["dim"] == 32
    assert emb["input_contract"]["space"]["model_id"] == tiny_bert.name
    assert emb["metrics"]["n_samples"] == 48
    tok = await train(gateway, "tok", "tokens", "attention_pooling", params={"max_epochs": 20})
    assert tok["input_contract"]["kind"] == "tokens"
    chain = await train(gateway, "chain", "pipeline:emb", "gaussian_nb")
    assert chain["source"] == {"type": "pipeline", "name": "emb", "version": 1}
    assert chain["input_contract"] == {"kind": "probabilities", "dim": len(classes), "dtype": "float32",
                                       "space": None, "labels": classes}
    for name in ("emb", "tok", "chain"):
        response = await predict(gateway, name)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == 3
        assert all(list(p["probabilities"]) == classes and p["label"] in classes for p in predictions)

    report = (await gateway.get("/v1/pipelines/chain")).json()
    assert report["compatible"] and [link["producer"] for link in report["chain"]] == [
        f"encoder {ENCODER_URL} model {tiny_bert.name} output embedding", "pipeline emb v1"]
    assert {p["name"] for p in (await gateway.get("/v1/pipelines")).json()["pipelines"]} == {"emb", "tok", "chain"}
    assert (await gateway.get("/readyz")).status_code == 200


async def test_the_gateway_answers_what_the_services_answer_directly(gateway, world):
    await train(gateway, "emb", "embedding", "logistic_regression")
    served = (await predict(gateway, "emb")).json()["predictions"]
    async with httpx.AsyncClient(transport=world.encoder, base_url=ENCODER_URL) as encoder, \
            httpx.AsyncClient(transport=world.classifier, base_url=CLASSIFIER_URL) as classifier:
        vectors = (await encoder.post("/v1/encode", json={"texts": PROBE, "output": "embedding"})).json()["data"]
        direct = (await classifier.post("/v1/models/emb/predict", json={"features": vectors})).json()["predictions"]
    assert [p["label"] for p in served] == [p["label"] for p in direct]
    for s, d in zip(served, direct):
        np.testing.assert_allclose(list(s["probabilities"].values()), list(d["probabilities"].values()), atol=1e-6)


async def test_swapped_encoder_spaces_are_refused(gateway, world, tiny_bert_other, tiny_bert_wide):
    await train(gateway, "emb", "embedding", "logistic_regression")
    await world.serve_encoder(tiny_bert_other)
    response = await predict(gateway, "emb")
    assert response.status_code == 409, response.text
    fields = {m["field"] for m in response.json()["mismatches"]}
    assert {"space.model_id", "space.weights_sha256", "space.fingerprint"} <= fields and "dim" not in fields
    detail = response.json()["detail"]
    assert f"encoder {ENCODER_URL} model {tiny_bert_other.name} output embedding" in detail
    assert f"classifier {CLASSIFIER_URL} model emb v1" in detail

    await world.serve_encoder(tiny_bert_wide)
    response = await predict(gateway, "emb")
    assert response.status_code == 409
    assert "dim" in {m["field"] for m in response.json()["mismatches"]}


async def test_the_encoder_back_with_the_fitted_model_is_served_again(gateway, world, tiny_bert, tiny_bert_other):
    await train(gateway, "emb")
    await world.serve_encoder(tiny_bert_other)
    assert (await predict(gateway, "emb")).status_code == 409
    await world.serve_encoder(tiny_bert)
    assert (await predict(gateway, "emb")).status_code == 200


async def test_reordered_probability_columns_are_refused(gateway, world, tiny_classifier, tiny_classifier_reordered):
    await world.serve_encoder(tiny_classifier)
    probs = await train(gateway, "probs", "probabilities")
    assert probs["estimator"] == "gaussian_nb"  # the classifier's default for probabilities
    assert (await predict(gateway, "probs")).status_code == 200
    await world.serve_encoder(tiny_classifier_reordered)
    response = await predict(gateway, "probs")
    assert response.status_code == 409, response.text
    (labels,) = [m for m in response.json()["mismatches"] if m["field"] == "labels"]
    assert labels["message"] == "same labels in another column order"


async def test_an_encoder_without_a_head_cannot_train_on_probabilities(gateway):
    texts, labels = sample()
    response = await gateway.post("/v1/pipelines/p/train", json={"texts": texts, "labels": labels, "feature": "probabilities"})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/output-unavailable")


async def test_upstreams_away_and_back(gateway, world, tiny_bert):
    await train(gateway, "emb")
    await world.stop_encoder()
    response = await predict(gateway, "emb")
    assert response.status_code == 503 and f"encoder {ENCODER_URL}" in response.json()["detail"]
    assert (await gateway.get("/readyz")).status_code == 503
    await world.serve_encoder(tiny_bert)
    assert (await predict(gateway, "emb")).status_code == 200
    assert (await gateway.get("/readyz")).status_code == 200


async def test_classifier_refusals_pass_through(gateway):
    texts, labels = sample()
    response = await gateway.post("/v1/pipelines/emb/train",
                                  json={"texts": texts, "labels": labels, "estimator": "attention_pooling"})
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/incompatible-estimator")
    assert "attention_pooling does not fit embedding features" in response.json()["detail"]
    response = await gateway.post("/v1/pipelines/one/train", json={"texts": ["a b", "c d"], "labels": ["x", "x"]})
    assert 400 <= response.status_code < 500, response.text
