"""The gateway wired in process to the REAL encoder and classifier apps (tiny models, ASGI transports).

An encoder "restart with another model" is a new encoder app behind the same transport.
"""

from __future__ import annotations

import httpx
import numpy as np

from tests.support import CLASSIFIER_URL, ENCODER_URL, sample, train

PROBE = ["I was charged twice", "where is my parcel", "I forgot my password"]


async def predict(client, name, texts=PROBE):
    return await client.post(f"/v1/pipelines/{name}/predict", json={"texts": texts})


async def test_three_patterns_through_the_real_services(gateway, tiny_bert):
    classes = sorted(set(sample(48)[1]))
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
    texts, labels = sample(48)
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
    texts, labels = sample(48)
    response = await gateway.post("/v1/pipelines/emb/train",
                                  json={"texts": texts, "labels": labels, "estimator": "attention_pooling"})
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/incompatible-estimator")
    assert "attention_pooling does not fit embedding features" in response.json()["detail"]
    response = await gateway.post("/v1/pipelines/one/train", json={"texts": ["a b", "c d"], "labels": ["x", "x"]})
    assert 400 <= response.status_code < 500, response.text
