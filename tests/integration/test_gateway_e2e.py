"""The gateway end to end: real encoder, classifier and gateway processes on 127.0.0.1.

One classifier and one gateway serve the whole module; the encoder is restarted on the same port
with whichever model a test needs (tests are ordered so that few restarts happen). The gateway is
never restarted: each test that takes an upstream away checks that it recovers on its own.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.processes import PROBE, ServiceProcess, running, started
from tests.support import sample

pytestmark = pytest.mark.integration

@dataclass
class Stack:
    """The three services; ``serve_encoder`` swaps the encoder's model, keeping its port."""

    var: Path
    classifier: ServiceProcess
    encoder: ServiceProcess
    gateway: ServiceProcess
    encoder_model: Path | None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=120))

    def serve_encoder(self, model: Path) -> None:
        if model == self.encoder_model and self.encoder.proc is not None and self.encoder.proc.poll() is None:
            return
        self.encoder.stop()
        self.encoder = ServiceProcess("encoder_service", encoder_env(model), port=self.encoder.port,
                                      log=self.var / "encoder.log").start()
        self.encoder_model = model

    def restart_classifier(self) -> None:
        self.classifier = ServiceProcess("classifier_service", self.classifier.env, port=self.classifier.port,
                                         log=self.var / "classifier.log").start()

    def train(self, name: str, feature: str, estimator: str | None = None, **extra) -> httpx.Response:
        texts, labels = sample()
        body = {"texts": texts, "labels": labels, "feature": feature, "estimator": estimator, **extra}
        return self.http.post(f"{self.gateway.url}/v1/pipelines/{name}/train", json=body)

    def ensure(self, name: str, model: Path, feature: str, estimator: str | None = None) -> None:
        """``name`` trained through the encoder serving ``model`` (once per module)."""
        if self.http.get(f"{self.classifier.url}/v1/models/{name}").status_code == 200:
            return
        self.serve_encoder(model)
        response = self.train(name, feature, estimator)
        assert response.status_code == 201, response.text

    def predict(self, name: str, texts: list[str] = PROBE) -> httpx.Response:
        return self.http.post(f"{self.gateway.url}/v1/pipelines/{name}/predict", json={"texts": texts})


def encoder_env(model: Path) -> dict[str, str]:
    return {"ENCODER_MODEL": str(model), "ENCODER_THREADS": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("gateway-e2e")
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(var / "models"), "CLASSIFIER_TORCH_THREADS": "1"},
                                log=var / "classifier.log")
    encoder = ServiceProcess("encoder_service", encoder_env(tiny_bert), log=var / "encoder.log")
    gateway = ServiceProcess(
        "gateway",
        # Re-read contracts on every refusal, and no record cache: each test sees the state it made at once.
        {"GATEWAY_ENCODER_URL": encoder.url, "GATEWAY_CLASSIFIER_URL": classifier.url,
         "GATEWAY_RECHECK_INTERVAL_S": "0", "GATEWAY_PIPELINE_TTL_S": "0", "GATEWAY_TIMEOUT_S": "60"},
        log=var / "gateway.log",
    )
    stack = Stack(var, classifier, encoder, gateway, tiny_bert)
    try:
        started(classifier, encoder, gateway)
        yield stack
    finally:
        stack.http.close()
        # The stack's current processes: a restarted upstream is another ServiceProcess than the first.
        for service in (stack.gateway, stack.encoder, stack.classifier, encoder, classifier):
            service.stop()


def assert_refused(response: httpx.Response, stack: Stack, name: str, fields: set[str]) -> list[dict]:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/incompatible-pipeline")
    mismatches = problem["mismatches"]
    assert fields <= {m["field"] for m in mismatches}, mismatches
    producer = f"encoder {stack.encoder.url} model "
    consumer = f"classifier {stack.classifier.url} model {name} v1"
    for m in mismatches:
        assert m["producer"].startswith(producer) and m["consumer"] == consumer, m
    assert producer in problem["detail"] and consumer in problem["detail"]
    return mismatches


# --- the three patterns ----------------------------------------------------------------------------------


def test_embedding_tokens_and_chain_through_the_gateway(stack, tiny_bert):
    stack.serve_encoder(tiny_bert)
    texts, labels = sample()
    classes = sorted(set(labels))

    emb = stack.train("emb", "embedding", "logistic_regression")
    assert emb.status_code == 201, emb.text
    assert emb.json()["input_contract"]["kind"] == "embedding" and emb.json()["input_contract"]["dim"] == 32
    assert emb.json()["classes"] == classes and emb.json()["metrics"]["n_samples"] == len(texts)

    tok = stack.train("tok", "tokens", "attention_pooling")
    assert tok.status_code == 201, tok.text
    assert tok.json()["input_contract"]["kind"] == "tokens"

    chain = stack.train("chain", "pipeline:emb", "gaussian_nb")
    assert chain.status_code == 201, chain.text
    assert chain.json()["source"] == {"type": "pipeline", "name": "emb", "version": 1}
    assert chain.json()["input_contract"]["labels"] == classes

    for name in ("emb", "tok", "chain"):
        response = stack.predict(name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == name and body["version"] == 1 and len(body["predictions"]) == len(PROBE)
        for p in body["predictions"]:
            assert p["label"] in classes and list(p["probabilities"]) == classes
            assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    report = stack.http.get(f"{stack.gateway.url}/v1/pipelines/chain").json()
    assert report["compatible"] is True
    assert [link["consumer"]["model"] for link in report["chain"]] == ["emb", "chain"]
    assert report["chain"][0]["producer"] == f"encoder {stack.encoder.url} model {tiny_bert.name} output embedding"
    listing = stack.http.get(f"{stack.gateway.url}/v1/pipelines").json()
    assert {"emb", "tok", "chain"} <= {p["name"] for p in listing["pipelines"]}


# --- upstream faults -------------------------------------------------------------------------------------


def assert_down_is_503(stack: Stack, upstream: str) -> None:
    """``upstream`` (encoder or classifier) stopped: a predict and /readyz are 503 naming it."""
    service: ServiceProcess = getattr(stack, upstream)
    service.stop()
    response = stack.predict("emb")
    assert response.status_code == 503, response.text
    assert f"{upstream} {service.url}" in response.json()["detail"]
    ready = stack.http.get(f"{stack.gateway.url}/readyz")
    assert ready.status_code == 503 and f"{upstream} {service.url}" in ready.json()["detail"]


def test_encoder_down_is_503_and_the_gateway_recovers(stack, tiny_bert):
    stack.ensure("emb", tiny_bert, "embedding", "logistic_regression")
    stack.serve_encoder(tiny_bert)
    gateway_pid = stack.gateway.proc.pid
    assert stack.predict("emb").status_code == 200

    assert_down_is_503(stack, "encoder")

    stack.encoder_model = None  # force a start of the same model on the same port
    stack.serve_encoder(tiny_bert)
    assert stack.predict("emb").status_code == 200
    assert stack.http.get(f"{stack.gateway.url}/readyz").status_code == 200
    assert stack.gateway.proc.pid == gateway_pid


def test_classifier_down_is_503_and_the_gateway_recovers(stack, tiny_bert):
    stack.ensure("emb", tiny_bert, "embedding", "logistic_regression")
    stack.serve_encoder(tiny_bert)
    before = stack.predict("emb").json()

    assert_down_is_503(stack, "classifier")

    stack.restart_classifier()  # same port, same store: the model is still there
    assert stack.predict("emb").json() == before


def test_a_second_gateway_shares_nothing_and_times_out_on_a_frozen_encoder(stack, tiny_bert):
    """Gateways are stateless: another one serves the pipelines at once. A frozen encoder is a 504."""
    stack.ensure("emb", tiny_bert, "embedding", "logistic_regression")
    stack.serve_encoder(tiny_bert)
    env = {"GATEWAY_ENCODER_URL": stack.encoder.url, "GATEWAY_CLASSIFIER_URL": stack.classifier.url,
           "GATEWAY_TIMEOUT_S": "1"}
    with running("gateway", env, log=stack.var / "gateway-2.log") as second:
        url = f"{second.url}/v1/pipelines/emb/predict"
        assert stack.http.post(url, json={"texts": PROBE}).json() == stack.predict("emb").json()
        stack.encoder.proc.send_signal(signal.SIGSTOP)
        try:
            response = stack.http.post(url, json={"texts": PROBE})
        finally:
            stack.encoder.proc.send_signal(signal.SIGCONT)
        assert response.status_code == 504, response.text
        assert f"encoder {stack.encoder.url} did not answer within 1s" in response.json()["detail"]
        assert stack.http.post(url, json={"texts": PROBE}).status_code == 200


# --- downstream models, evaluation and out-of-distribution (issue 20) ------------------------------------


def test_downstream_models_evaluate_and_drift_through_real_processes(stack, tiny_bert):
    stack.serve_encoder(tiny_bert)
    texts, labels = sample()
    http, url = stack.http, stack.gateway.url
    lstm = stack.train("ds-lstm", "tokens", "lstm", params={"hidden_size": 8, "max_epochs": 15},
                       preprocess=["standardize"], calibrate="sigmoid")
    assert lstm.status_code == 201, lstm.text
    assert lstm.json()["calibrate"] == "sigmoid" and "ece_after" in lstm.json()["metrics"]
    targets = [float(len(t)) for t in texts]
    ridge = http.post(f"{url}/v1/pipelines/ds-ridge/train",
                      json={"texts": texts, "targets": targets, "preprocess": [{"pca": 16}, "l2_normalize"]})
    assert ridge.status_code == 201, ridge.text
    assert ridge.json()["task"] == "regression" and ridge.json()["preprocess"][0] == {"pca": 16}
    for name in ("ds-lstm", "ds-ridge"):
        row = stack.predict(name).json()["predictions"][0]
        assert 0.0 <= row["ood"] <= 1.0 and isinstance(row["in_distribution"], bool)
    assert "value" in stack.predict("ds-ridge").json()["predictions"][0]
    ev = http.post(f"{url}/v1/pipelines/ds-lstm/evaluate", json={"texts": texts[:40], "labels": labels[:40]})
    assert ev.status_code == 200, ev.text
    m = ev.json()["metrics"]
    assert sum(map(sum, m["confusion_matrix"])) == 40 and 0 <= m["accuracy"] <= 1 and m["log_loss"] > 0
    ev = http.post(f"{url}/v1/pipelines/ds-ridge/evaluate?version=1", json={"texts": texts[:40], "targets": targets[:40]})
    assert ev.status_code == 200 and set(ev.json()["metrics"]) == {"n_samples", "r2", "mae", "rmse"}
    drift = http.get(f"{url}/v1/pipelines/ds-ridge/drift").json()
    assert drift["predictions"] == 2 * len(PROBE)  # evaluate's texts are not traffic
    assert "seam_ood_score_bucket" in http.get(f"{url}/metrics").text
    oip = http.post(f"{stack.classifier.url}/v2/models/ds-ridge/infer", json={"inputs": [
        {"name": "FEATURES", "shape": [1, 32], "datatype": "FP32", "data": [0.1] * 32}]})
    assert oip.status_code == 200 and oip.json()["outputs"][0]["name"] == "VALUE"


# --- refusals --------------------------------------------------------------------------------------------
# Each test swaps the encoder's model on the same port (a few seconds a start): in this order, the pipelines
# trained through tiny_bert first, each model is started once.


def test_other_width_is_refused_with_a_dim_mismatch(stack, tiny_bert, tiny_bert_wide):
    stack.ensure("emb", tiny_bert, "embedding", "logistic_regression")
    stack.ensure("chain", tiny_bert, "pipeline:emb", "gaussian_nb")
    stack.serve_encoder(tiny_bert_wide)
    mismatches = assert_refused(stack.predict("emb"), stack, "emb", {"dim"})
    (dim,) = [m for m in mismatches if m["field"] == "dim"]
    assert (dim["expected"], dim["actual"]) == (32, 48)
    # The chain built on it is refused too, naming the link that broke.
    response = stack.predict("chain")
    assert response.status_code == 409 and "model emb v1" in response.json()["detail"]


def test_same_width_other_space_is_refused(stack, tiny_bert, tiny_bert_other):
    stack.ensure("emb", tiny_bert, "embedding", "logistic_regression")
    stack.serve_encoder(tiny_bert_other)
    mismatches = assert_refused(stack.predict("emb"), stack, "emb", {"space.weights_sha256", "space.fingerprint"})
    assert "dim" not in {m["field"] for m in mismatches}
    report = stack.http.get(f"{stack.gateway.url}/v1/pipelines/emb").json()
    assert report["compatible"] is False


def test_probability_columns_reordered_are_refused(stack, tiny_classifier, tiny_classifier_reordered):
    stack.ensure("probs", tiny_classifier, "probabilities", "gaussian_nb")
    stack.serve_encoder(tiny_classifier)
    assert stack.predict("probs").status_code == 200
    stack.serve_encoder(tiny_classifier_reordered)
    mismatches = assert_refused(stack.predict("probs"), stack, "probs", {"labels"})
    (labels,) = [m for m in mismatches if m["field"] == "labels"]
    assert labels["expected"] == ["negative", "neutral", "positive"]
    assert labels["actual"] == ["positive", "neutral", "negative"]


# --- the real model --------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_minilm_predictions_equal_the_in_process_recipe(stack, minilm_path):
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    params = {"C": 1.0, "max_iter": 1000}
    stack.serve_encoder(minilm_path)
    trained = stack.train("minilm", "embedding", "logistic_regression", params=params)
    assert trained.status_code == 201, trained.text
    served = stack.predict("minilm")
    assert served.status_code == 200, served.text

    texts, labels = sample()
    model = SentenceTransformer(str(minilm_path), device="cpu")
    recipe = LogisticRegression(**params).fit(model.encode(texts, batch_size=64), labels)
    expected = recipe.predict_proba(model.encode(PROBE))
    predictions = served.json()["predictions"]
    assert [p["label"] for p in predictions] == list(recipe.classes_[expected.argmax(axis=1)])
    got = np.array([[p["probabilities"][c] for c in recipe.classes_] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-3)
