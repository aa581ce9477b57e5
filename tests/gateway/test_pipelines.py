"""Train, predict, chains, the compatibility check and its caches, against fake upstreams."""

from __future__ import annotations

import numpy as np
import pytest

from services.codecs import Ragged
from services.contracts import TensorContract
from tests.gateway.fakes import CLASSIFIER_URL, ENCODER_URL, LABELS, TEXTS, train


async def test_train_encodes_in_chunks_and_fits_with_the_encoders_contract(client, fake_encoder, fake_classifier):
    response = await train(client, "intents", params={"C": 2.0})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "intents" and body["version"] == 1
    assert body["classes"] == ["account", "billing", "shipping"]
    assert body["source"] == {"type": "encoder", "output": "embedding"}
    assert TensorContract.model_validate(body["input_contract"]) == fake_encoder.contracts["embedding"]
    assert body["metrics"] == {"train_accuracy": 1.0}
    # 10 texts, 4 per encoder call (settings.train_chunk_size), stitched back in order.
    assert fake_encoder.calls["POST /v1/encode"] == 3
    np.testing.assert_array_equal(fake_classifier.fitted[("intents", 1)], fake_encoder.features(TEXTS, "embedding"))


async def test_predict_resolves_checks_encodes_and_predicts(client, runtime, fake_encoder, fake_classifier):
    await train(client, "intents")
    response = await client.post("/v1/pipelines/intents/predict", json={"texts": ["parcel lost", "charged twice"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "intents" and body["version"] == 1
    first = body["predictions"][0]
    assert first["label"] == "account"
    assert list(first["probabilities"]) == ["account", "billing", "shipping"]
    assert first["probabilities"]["account"] == pytest.approx(0.7)
    assert first["truncated"] is False
    name, version, features = fake_classifier.predicted[-1]
    assert (name, version) == ("intents", 1)
    np.testing.assert_array_equal(features, fake_encoder.features(["parcel lost", "charged twice"], "embedding"))


async def test_the_check_runs_once_per_pair_of_contracts_not_per_request(client, runtime, fake_encoder, fake_classifier):
    await train(client, "intents")
    for _ in range(5):
        assert (await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})).status_code == 200
    assert runtime.catalog.checks_run == 1
    assert fake_encoder.calls["GET /v1/outputs"] == 1  # read at start, never again: the contract id did not change
    assert fake_classifier.calls["GET /v1/models/intents/latest"] == 0  # the fit's record is reused (pipeline_ttl_s)


async def test_tokens_travel_ragged(client, fake_encoder, fake_classifier):
    response = await train(client, "seq", feature="tokens", estimator="attention_pooling")
    assert response.status_code == 201, response.text
    fitted = fake_classifier.fitted[("seq", 1)]
    assert isinstance(fitted, Ragged)
    assert fitted.lengths.tolist() == [len(t.split()) for t in TEXTS]
    response = await client.post("/v1/pipelines/seq/predict", json={"texts": ["where is my parcel"]})
    assert response.status_code == 200, response.text
    assert isinstance(fake_classifier.predicted[-1][2], Ragged)


async def test_a_chain_feeds_one_pipelines_probabilities_to_another(client, fake_classifier):
    await train(client, "base")
    response = await train(client, "child", feature="pipeline:base", estimator="gaussian_nb")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["source"] == {"type": "pipeline", "name": "base", "version": 1}
    assert body["input_contract"] == {"kind": "probabilities", "dim": 3, "dtype": "float32", "space": None,
                                      "labels": ["account", "billing", "shipping"]}
    assert fake_classifier.fitted[("child", 1)].shape == (len(TEXTS), 3)

    response = await client.post("/v1/pipelines/child/predict", json={"texts": ["hello", "refund please"]})
    assert response.status_code == 200, response.text
    assert [(n, v) for n, v, _ in fake_classifier.predicted[-2:]] == [("base", 1), ("child", 1)]
    base_probabilities = fake_classifier.predicted[-1][2]
    assert base_probabilities.shape == (2, 3)

    report = (await client.get("/v1/pipelines/child")).json()
    assert report["compatible"] is True and report["mismatches"] == []
    assert [link["consumer"]["model"] for link in report["chain"]] == ["base", "child"]
    assert report["chain"][0]["producer"] == f"encoder {ENCODER_URL} model fake-encoder output embedding"
    assert report["chain"][1]["producer"] == "pipeline base v1"
    assert report["chain"][1]["source"] == {"type": "pipeline", "name": "base", "version": 1}


async def test_a_chain_is_pinned_to_the_base_version_it_was_trained_on(client, fake_classifier):
    await train(client, "base")
    await train(client, "child", feature="pipeline:base")
    await train(client, "base")  # base v2: the child still runs on v1
    assert (await client.post("/v1/pipelines/child/predict", json={"texts": ["hello"]})).status_code == 200
    assert [(n, v) for n, v, _ in fake_classifier.predicted[-2:]] == [("base", 1), ("child", 1)]


async def test_list_reports_every_pipeline(client):
    await train(client, "b-model")
    await train(client, "a-model", feature="tokens", estimator="attention_pooling")
    listing = (await client.get("/v1/pipelines")).json()
    assert [p["name"] for p in listing["pipelines"]] == ["a-model", "b-model"]
    assert all(p["compatible"] for p in listing["pipelines"])
    assert listing["pipelines"][0]["chain"][0]["source"] == {"type": "encoder", "output": "tokens"}


async def test_encoder_swapped_for_another_space_of_the_same_width_is_refused(client, runtime, fake_encoder):
    await train(client, "intents")
    fake_encoder.serve("other-encoder", dim=8)  # restarted with another model, same width
    response = await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/incompatible-pipeline")
    fields = {m["field"] for m in problem["mismatches"]}
    assert {"space.model_id", "space.weights_sha256", "space.fingerprint"} <= fields
    producer = f"encoder {ENCODER_URL} model other-encoder output embedding"
    consumer = f"classifier {CLASSIFIER_URL} model intents v1"
    assert all(m["producer"] == producer and m["consumer"] == consumer for m in problem["mismatches"])
    assert producer in problem["detail"] and consumer in problem["detail"]
    assert fake_encoder.calls["GET /v1/outputs"] == 2  # re-read once, when the new contract id showed up

    # Refused from now on before anything is encoded: the check result is cached with the new contract.
    encodes = fake_encoder.calls["POST /v1/encode"]
    assert (await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})).status_code == 409
    assert fake_encoder.calls["POST /v1/encode"] == encodes

    report = (await client.get("/v1/pipelines/intents")).json()
    assert report["compatible"] is False and {m["field"] for m in report["mismatches"]} == fields


async def test_encoder_back_on_the_fitted_model_is_accepted_again(client, fake_encoder):
    await train(client, "intents")
    fake_encoder.serve("other-encoder", dim=8)
    assert (await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})).status_code == 409
    fake_encoder.serve("fake-encoder", dim=8)
    # A cached refusal re-reads the encoder's contracts before it refuses again: no gateway restart.
    assert (await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})).status_code == 200


async def test_refusals_reread_the_encoder_at_most_every_recheck_interval(gateway_with, fake_encoder):
    async with gateway_with(recheck_interval_s=3600.0) as client:
        await train(client, "intents")
        fake_encoder.serve("other-encoder", dim=8)
        for _ in range(3):
            response = await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})
            assert response.status_code == 409
            assert fake_encoder.calls["GET /v1/outputs"] == 2


async def test_encoder_of_another_width_is_refused_with_a_dim_mismatch(client, fake_encoder):
    await train(client, "intents")
    fake_encoder.serve("wide-encoder", dim=12)
    response = await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})
    assert response.status_code == 409, response.text
    dim = [m for m in response.json()["mismatches"] if m["field"] == "dim"]
    assert dim and dim[0]["expected"] == 8 and dim[0]["actual"] == 12
    assert "8-wide" in response.json()["detail"]


async def test_probability_columns_in_another_order_are_refused(client, fake_encoder):
    fake_encoder.serve("sentiment", dim=8, labels=["negative", "neutral", "positive"])  # no re-read needed first
    assert (await train(client, "probs", feature="probabilities", estimator="gaussian_nb")).status_code == 201
    fake_encoder.serve("sentiment", dim=8, labels=["positive", "neutral", "negative"])
    response = await client.post("/v1/pipelines/probs/predict", json={"texts": ["hello"]})
    assert response.status_code == 409, response.text
    (labels,) = [m for m in response.json()["mismatches"] if m["field"] == "labels"]
    assert labels["expected"] == ["negative", "neutral", "positive"]
    assert labels["actual"] == ["positive", "neutral", "negative"]
    assert labels["message"] == "same labels in another column order"


async def test_a_compatible_contract_change_is_rechecked_and_served(client, runtime, fake_encoder):
    await train(client, "intents")
    fake_encoder.serve("fake-encoder", dim=8, fingerprint_noise=1e-6)  # new id, same space
    assert (await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})).status_code == 200
    assert fake_encoder.calls["GET /v1/outputs"] == 2
    assert runtime.catalog.checks_run == 2


async def test_an_encoder_without_the_fitted_output_is_refused(client, fake_encoder):
    fake_encoder.serve("sentiment", dim=8, labels=["negative", "positive"])
    await client.get("/readyz")
    assert (await train(client, "probs", feature="probabilities")).status_code == 201
    fake_encoder.serve("plain", dim=8)  # no classification head: no probabilities output
    await client.get("/readyz")
    response = await client.post("/v1/pipelines/probs/predict", json={"texts": ["hello"]})
    assert response.status_code == 409
    (mismatch,) = response.json()["mismatches"]
    assert mismatch["field"] == "source" and "no probabilities output" in mismatch["message"]


async def test_training_on_a_missing_output_is_refused(client):
    response = await train(client, "probs", feature="probabilities")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/output-unavailable")
    assert "probabilities" in response.json()["detail"]


async def test_a_model_fitted_without_a_source_cannot_run(client, fake_classifier, fake_encoder):
    fake_classifier.add("direct", fake_encoder.contracts["embedding"], None, ["a", "b"])
    report = (await client.get("/v1/pipelines/direct")).json()
    assert report["compatible"] is False
    assert report["mismatches"][0]["field"] == "source"
    response = await client.post("/v1/pipelines/direct/predict", json={"texts": ["hello"]})
    assert response.status_code == 409
    assert "no source was recorded" in response.json()["detail"]


async def test_a_chain_whose_base_is_gone_is_refused(client, fake_classifier):
    await train(client, "base")
    await train(client, "child", feature="pipeline:base")
    del fake_classifier.models["base"]
    response = await client.get("/v1/pipelines/child")
    assert response.status_code == 200
    assert "pipeline base v1, its source, no longer exists" in response.json()["mismatches"][0]["message"]


async def test_a_looping_chain_is_reported_not_followed_forever(client, fake_classifier):
    probabilities = TensorContract(kind="probabilities", dim=2, labels=["a", "b"])
    fake_classifier.add("ping", probabilities, {"type": "pipeline", "name": "pong", "version": 1}, ["a", "b"])
    fake_classifier.add("pong", probabilities, {"type": "pipeline", "name": "ping", "version": 1}, ["a", "b"])
    report = (await client.get("/v1/pipelines/ping")).json()
    assert report["compatible"] is False
    assert "loops back" in report["mismatches"][-1]["message"]


async def test_versions_trained_elsewhere_are_seen_after_the_ttl(gateway_with, fake_encoder, fake_classifier):
    async with gateway_with(pipeline_ttl_s=0.0) as client:
        await train(client, "intents")
        fake_classifier.add("intents", fake_encoder.contracts["embedding"], {"type": "encoder", "output": "embedding"},
                            ["account", "billing", "shipping"])  # v2, through another gateway
        response = await client.post("/v1/pipelines/intents/predict", json={"texts": ["hello"]})
        assert response.json()["version"] == 2
        pinned = await client.post("/v1/pipelines/intents/predict?version=1", json={"texts": ["hello"]})
        assert pinned.json()["version"] == 1


async def test_estimator_and_feature_have_defaults(client, fake_classifier):
    response = await client.post("/v1/pipelines/intents/train", json={"texts": TEXTS, "labels": LABELS})
    assert response.status_code == 201, response.text
    assert response.json()["feature"] == "embedding"
    assert response.json()["estimator"] == "logistic_regression"  # the classifier's choice
