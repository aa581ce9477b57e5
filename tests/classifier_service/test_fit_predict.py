"""Every estimator fits and predicts over HTTP, as JSON and as binary frames; versions and listings."""

from __future__ import annotations

import numpy as np
import pytest

from services.codecs import BINARY_CONTENT_TYPE, decode_binary
from tests.classifier_service.synthetic import binary, CLASSES, features_for, fit, fit_body, tensor_json

FAST = {"attention_pooling": {"max_epochs": 40, "learning_rate": 0.02}}  # a fit well under a second

ESTIMATORS = [
    ("embedding", "logistic_regression"),
    ("embedding", "gaussian_nb"),
    ("embedding", "linear_svm"),
    ("embedding", "mlp"),
    ("tokens", "mean_pooling"),
    ("tokens", "attention_pooling"),
    ("probabilities", "gaussian_nb"),
    ("probabilities", "logistic_regression"),
]


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": 0, "skipped": []}


@pytest.mark.parametrize(("kind", "estimator"), ESTIMATORS)
async def test_every_estimator_fits_and_predicts(client, kind, estimator):
    features, labels, contract = features_for(kind, per_class=10)
    body = fit_body(features, labels, contract, estimator=estimator, params=FAST.get(estimator, {}),
                    source={"type": "encoder", "output": kind})
    r = await client.post("/v1/models/m/fit", json=body)
    assert r.status_code == 201, r.text
    record = r.json()
    assert r.headers["location"] == "/v1/models/m/versions/1"
    assert record["name"] == "m" and record["version"] == 1 and record["estimator"] == estimator
    assert record["input_contract"] == contract.model_dump()
    assert record["source"] == {"type": "encoder", "output": kind}
    assert record["classes"] == sorted(CLASSES)
    assert len(record["data_sha256"]) == 64 and record["created_at"]
    metrics = record["metrics"]
    assert metrics["n_samples"] == 30
    assert metrics["train_accuracy"] > 0.8
    if estimator == "attention_pooling":
        assert metrics["cv_accuracy"] is None and "holdout_accuracy" in metrics and metrics["cv_skipped_reason"]
    else:
        assert metrics["cv_folds"] == 5 and 0.6 < metrics["cv_accuracy"] <= 1.0

    r = await client.post("/v1/models/m/predict", json={"features": tensor_json(features)})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["name"] == "m" and answer["version"] == 1 and answer["classes"] == sorted(CLASSES)
    rows = answer["predictions"]
    assert len(rows) == 30
    for row in rows:
        assert list(row["probabilities"]) == sorted(CLASSES)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    accuracy = np.mean([row["label"] == y for row, y in zip(rows, labels)])
    assert accuracy == pytest.approx(metrics["train_accuracy"])


@pytest.mark.parametrize("kind", ["embedding", "tokens", "probabilities"])
async def test_binary_frames_both_ways(client, kind):
    features, labels, contract = features_for(kind)
    r = await client.post("/v1/models/b/fit", **binary(features, labels=labels, contract=contract.model_dump()))
    assert r.status_code == 201, r.text
    as_json = (await client.post("/v1/models/b/predict", json={"features": tensor_json(features)})).json()
    request = binary(features)
    request["headers"]["accept"] = BINARY_CONTENT_TYPE
    r = await client.post("/v1/models/b/predict", **request)
    assert r.status_code == 200 and r.headers["content-type"] == BINARY_CONTENT_TYPE
    frame = decode_binary(r.content)
    assert frame.meta["name"] == "b" and frame.meta["version"] == 1 and frame.meta["classes"] == as_json["classes"]
    assert frame.meta["labels"] == [p["label"] for p in as_json["predictions"]]
    expected = np.array([[p["probabilities"][c] for c in as_json["classes"]] for p in as_json["predictions"]])
    np.testing.assert_allclose(frame.tensor, expected, atol=1e-7)


@pytest.mark.parametrize(("kind", "default"), [("embedding", "logistic_regression"), ("tokens", "mean_pooling"),
                                               ("probabilities", "gaussian_nb")])
async def test_default_estimator_per_kind(client, kind, default):
    r = await fit(client, "d", kind)
    assert r.status_code == 201 and r.json()["estimator"] == default


async def test_recorded_params_are_the_effective_ones(client):
    r = await fit(client, "p", estimator="logistic_regression", params={"C": 0.5})
    assert r.json()["params"] == {"C": 0.5, "max_iter": 1000}
    r = await fit(client, "q", "tokens", estimator="attention_pooling", params={"max_epochs": 5, "seed": 3})
    params = r.json()["params"]
    assert params["max_epochs"] == 5 and params["seed"] == 3 and params["learning_rate"] > 0


async def test_versions_listing_and_delete(client):
    assert (await fit(client, "intents")).json()["version"] == 1
    assert (await fit(client, "intents", estimator="gaussian_nb")).json()["version"] == 2
    await fit(client, "other", "probabilities")

    features, _, _ = features_for("embedding")
    v1 = (await client.post("/v1/models/intents/predict?version=1", json={"features": tensor_json(features)})).json()
    latest = (await client.post("/v1/models/intents/predict", json={"features": tensor_json(features)})).json()
    assert v1["version"] == 1 and latest["version"] == 2

    detail = (await client.get("/v1/models/intents")).json()
    assert detail["name"] == "intents" and detail["latest"]["version"] == 2
    assert [v["estimator"] for v in detail["versions"]] == ["logistic_regression", "gaussian_nb"]
    assert (await client.get("/v1/models/intents/versions/1")).json()["estimator"] == "logistic_regression"

    listing = (await client.get("/v1/models")).json()
    assert [(m["name"], m["versions"], m["latest"]["version"]) for m in listing["models"]] == [
        ("intents", [1, 2], 2), ("other", [1], 1)
    ]
    assert listing["skipped"] == []
    assert (await client.get("/readyz")).json()["models"] == 2

    r = await client.delete("/v1/models/intents")
    assert r.status_code == 204 and r.content == b""
    for method, url in [("GET", "/v1/models/intents"), ("DELETE", "/v1/models/intents"),
                        ("POST", "/v1/models/intents/predict")]:
        r = await client.request(method, url, json={"features": tensor_json(features)})
        assert r.status_code == 404 and r.json()["type"].endswith("/model-not-found")
    assert [m["name"] for m in (await client.get("/v1/models")).json()["models"]] == ["other"]
    # a deleted name's numbers are never reused: v1 and v2 meant other models, so the new one is v3
    assert (await fit(client, "intents")).json()["version"] == 3


async def test_cross_validation_folds_follow_the_smallest_class(client):
    features, labels, contract = features_for("embedding", per_class=3)
    r = await client.post("/v1/models/small/fit", json=fit_body(features, labels, contract))
    assert r.json()["metrics"]["cv_folds"] == 3
    # one example of a fourth class: no stratified k-fold is possible, and the fit says so
    body = fit_body(features, labels[:-1] + ["cancel"], contract)
    metrics = (await client.post("/v1/models/tiny/fit", json=body)).json()["metrics"]
    assert metrics["cv_accuracy"] is None and metrics["cv_folds"] is None
    assert "at least 2 per class" in metrics["cv_skipped_reason"]


async def test_predict_accepts_a_matching_declared_contract(client):
    features, _, contract = features_for("embedding")
    await fit(client, "c")
    body = {"features": tensor_json(features[:2]), "contract": contract.model_dump()}
    assert (await client.post("/v1/models/c/predict", json=body)).status_code == 200
