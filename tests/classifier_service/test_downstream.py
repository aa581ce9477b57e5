"""Regression, the LSTM head, preprocessing steps, calibration and the OOD summary: each fits,
persists, reloads and predicts over HTTP; regression and preprocessing match scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from classifier_service.ood import OodSummary
from tests.classifier_service.synthetic import tensor_json
from services.scoring import expected_calibration_error
from tests.classifier_service.synthetic import (
    classifier_client, embedding_contract, features_for, fit, fit_body, sequences, tokens_contract, vectors,
)


def _targets(X: np.ndarray) -> list[float]:
    w = np.linspace(-1.0, 2.0, X.shape[1])
    return (X.astype(np.float64) @ w + 0.5).tolist()


async def _regress(client, name: str, X, contract, **fields):
    targets = _targets(X) if not hasattr(X, "lengths") else _targets(np.stack([r.mean(axis=0) for r in X.rows()]))
    body = {"features": tensor_json(X), "targets": targets, "contract": contract.model_dump(), **fields}
    return await client.post(f"/v1/models/{name}/fit", json=body), targets


@pytest.mark.parametrize("estimator", ["ridge", "mlp_regressor"])
async def test_regression_matches_scikit_learn_and_survives_a_restart(store, estimator):
    X, _ = vectors(per_class=12)
    reference = Ridge() if estimator == "ridge" else MLPRegressor(random_state=0, max_iter=1000)
    async with classifier_client(store) as client:
        r, targets = await _regress(client, "score", X, embedding_contract(), estimator=estimator)
        assert r.status_code == 201, r.text
        record = r.json()
        assert record["task"] == "regression" and record["classes"] == [] and record["estimator"] == estimator
        y = np.asarray(targets)
        reference.fit(X, y)
        m = record["metrics"]
        assert m["train_r2"] == pytest.approx(r2_score(y, reference.predict(X)), abs=1e-6)
        folds = list(KFold(5, shuffle=True, random_state=0).split(X))
        cv = [(r2_score(y[te], p), mean_absolute_error(y[te], p), root_mean_squared_error(y[te], p))
              for tr, te in folds for p in [type(reference)(**reference.get_params()).fit(X[tr], y[tr]).predict(X[te])]]
        assert m["cv_folds"] == 5
        assert (m["cv_r2"], m["cv_mae"], m["cv_rmse"]) == pytest.approx(tuple(np.mean(cv, axis=0)), abs=1e-6)
        before = (await client.post("/v1/models/score/predict", json={"features": tensor_json(X[:5])})).json()
    expected = reference.predict(X[:5])
    np.testing.assert_allclose([p["value"] for p in before["predictions"]], expected, atol=1e-6)
    async with classifier_client(store) as client:  # reloaded from the store
        after = (await client.post("/v1/models/score/predict", json={"features": tensor_json(X[:5])})).json()
        oip = await client.post("/v2/models/score/infer", json={"inputs": [
            {"name": "FEATURES", "shape": [5, X.shape[1]], "datatype": "FP32", "data": X[:5].ravel().tolist()}]})
    assert after["task"] == "regression" and after["predictions"] == before["predictions"]
    assert all(0.0 <= p["ood"] <= 1.0 for p in after["predictions"])
    outputs = {o["name"]: o for o in oip.json()["outputs"]}
    assert list(outputs) == ["VALUE"] and outputs["VALUE"]["datatype"] == "FP32"
    np.testing.assert_allclose(outputs["VALUE"]["data"], expected, rtol=1e-5, atol=1e-4)


async def test_mean_pooling_ridge_on_tokens(store):
    X, _ = sequences(per_class=10)
    async with classifier_client(store) as client:
        r, targets = await _regress(client, "tok-score", X, tokens_contract())
        assert r.status_code == 201 and r.json()["estimator"] == "mean_pooling_ridge"
    pooled = np.stack([row.mean(axis=0) for row in X.rows()])
    expected = Ridge().fit(pooled, targets).predict(pooled[:4])
    async with classifier_client(store) as client:  # reloaded from the store
        got = (await client.post("/v1/models/tok-score/predict", json={"features": tensor_json(X)})).json()["predictions"][:4]
    np.testing.assert_allclose([p["value"] for p in got], expected, atol=1e-5)


async def test_regressor_needs_targets_and_a_classifier_labels(client):
    X, labels = vectors()
    r = await client.post("/v1/models/m/fit", json={**fit_body(X, labels, embedding_contract()), "estimator": "ridge"})
    assert r.status_code == 422 and "regression estimator" in r.json()["detail"]
    r = await client.post("/v1/models/m/fit", json={**fit_body(X, labels, embedding_contract()), "targets": [1.0] * len(X)})
    assert r.status_code == 422 and "exactly one" in r.json()["detail"]


async def test_lstm_fits_persists_and_reloads(store):
    X, labels = sequences(per_class=12)
    async with classifier_client(store) as client:
        r = await client.post("/v1/models/seq/fit", json=fit_body(X, labels, tokens_contract(), estimator="lstm",
                                                                  params={"hidden_size": 16, "max_epochs": 40}))
        assert r.status_code == 201, r.text
        record = r.json()
        assert record["params"]["hidden_size"] == 16 and record["metrics"]["holdout_accuracy"] >= 0.5
        before = (await client.post("/v1/models/seq/predict", json={"features": tensor_json(X)})).json()
    assert sorted(p.name for p in (store / "seq" / "1").iterdir()) == [
        "head.json", "head.safetensors", "manifest.json", "ood.safetensors"]
    async with classifier_client(store) as client:
        after = (await client.post("/v1/models/seq/predict", json={"features": tensor_json(X)})).json()
    assert after["predictions"] == before["predictions"]
    accuracy = np.mean([p["label"] == y for p, y in zip(after["predictions"], labels)])
    assert accuracy >= 0.8


async def test_lstm_ignores_padding_and_is_seeded():
    from classifier_service.heads import LstmClassifier, LstmParams

    X, labels = sequences(per_class=6)
    a = LstmClassifier(LstmParams(hidden_size=8, max_epochs=5)).fit(X, np.asarray(labels))
    b = LstmClassifier(LstmParams(hidden_size=8, max_epochs=5)).fit(X, np.asarray(labels))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))  # fixed seed
    together = a.predict_proba(X)  # padded to the longest row of the batch
    alone = np.concatenate([a.predict_proba(type(X).from_rows([row], dim=X.dim)) for row in X.rows()])
    np.testing.assert_allclose(together, alone, atol=1e-5)


async def test_preprocess_steps_match_scikit_learn_and_are_listed(store):
    X, labels = vectors(per_class=12, dim=8)
    steps = ["standardize", {"pca": 4}, "l2_normalize"]
    async with classifier_client(store) as client:
        r = await client.post("/v1/models/pre/fit", json=fit_body(X, labels, embedding_contract(), preprocess=steps))
        assert r.status_code == 201, r.text
        assert r.json()["preprocess"] == [{"standardize": {}}, {"pca": 4}, {"l2_normalize": {}}]
        assert r.json()["input_contract"]["dim"] == 8  # the input contract stays the encoder's
    async with classifier_client(store) as client:
        got = (await client.post("/v1/models/pre/predict", json={"features": tensor_json(X)})).json()
    from sklearn.linear_model import LogisticRegression

    reference = make_pipeline(StandardScaler(), PCA(4, svd_solver="full"), Normalizer(), LogisticRegression(max_iter=1000))
    expected = reference.fit(X, labels).predict_proba(X)
    classes = got["classes"]
    probabilities = np.array([[p["probabilities"][c] for c in classes] for p in got["predictions"]])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
async def test_calibration_reports_ece_before_and_after(store, method):
    X, labels = vectors(per_class=20, seed=3)
    async with classifier_client(store) as client:
        r = await client.post("/v1/models/cal/fit", json=fit_body(X, labels, embedding_contract(), calibrate=method))
        assert r.status_code == 201, r.text
        m = r.json()["metrics"]
        assert m["calibration"] == method and 0 <= m["ece_before"] <= 1 and 0 <= m["ece_after"] <= 1
        before = (await client.post("/v1/models/cal/predict", json={"features": tensor_json(X)})).json()
    async with classifier_client(store) as client:
        after = (await client.post("/v1/models/cal/predict", json={"features": tensor_json(X)})).json()
    assert after["predictions"] == before["predictions"]
    rows = np.array([[p["probabilities"][c] for c in after["classes"]] for p in after["predictions"]])
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)
    assert r.json()["calibrate"] == method


async def test_calibration_works_on_a_torch_head(client):
    X, labels = sequences(per_class=10)
    r = await client.post("/v1/models/cal-head/fit", json=fit_body(
        X, labels, tokens_contract(), estimator="attention_pooling", calibrate="sigmoid", params={"max_epochs": 20}))
    assert r.status_code == 201, r.text
    assert "ece_after" in r.json()["metrics"]


def test_ece_equals_its_definition():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=200)
    truth = rng.integers(0, 3, size=200)
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == truth
    edges = np.linspace(0, 1, 11)
    expected = sum(
        inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
        for lo, hi in zip(edges, edges[1:])
        for inside in [(confidence > lo) & (confidence <= hi)] if inside.any()
    )
    assert expected_calibration_error(p, truth) == pytest.approx(expected, abs=1e-12)


def test_ood_scores_far_rows_higher_than_training_like_rows():
    X, labels = vectors(per_class=30, seed=0)
    held_out, _ = vectors(per_class=10, seed=1)
    summary = OodSummary.fit(X, np.asarray(labels))
    far = np.random.default_rng(5).normal(size=(20, X.shape[1])) * 0.2 - 3.0 * np.sign(X.mean(axis=0))
    inside, outside = summary.score(held_out), summary.score(far)
    assert ((0 <= inside) & (inside <= 1)).all() and ((0 <= outside) & (outside <= 1)).all()
    assert np.median(inside) < 0.8 and outside.mean() > inside.mean()
    assert len(summary.distances) <= 513


async def test_every_prediction_carries_ood_and_in_distribution(store):
    async with classifier_client(store, ood_threshold=0.5) as client:
        assert (await fit(client, "m")).status_code == 201
        X, _, _ = features_for("embedding")
        got = (await client.post("/v1/models/m/predict", json={"features": tensor_json(np.vstack([X[:3], -50 * X[:1]]))})).json()
    for p in got["predictions"]:
        assert 0.0 <= p["ood"] <= 1.0 and p["in_distribution"] == (p["ood"] < 0.5)


@pytest.mark.parametrize(("estimator", "params", "says"), [
    ("lstm", {"hidden_size": True}, "hidden_size"),
    ("lstm", {"hidden_size": 4096}, "less than or equal to 1024"),
    ("ridge", {"alpha": True}, "a boolean is not a number"),
    ("mlp_regressor", {"hidden_layer_sizes": [0]}, "hidden_layer_sizes"),
    ("mean_pooling_ridge", {"alpha": -1.0}, "alpha"),
])
def test_the_new_estimators_parameters_are_checked_strictly(estimator, params, says):
    from classifier_service.estimators import ESTIMATORS
    from services.errors import InvalidInput

    with pytest.raises(InvalidInput, match=says):
        ESTIMATORS[estimator].resolve_params(params)


def test_the_size_limit_counts_the_lstm_and_the_regressors_weights():
    from classifier_service.estimators import ESTIMATORS
    from services.errors import InvalidInput

    with pytest.raises(InvalidInput, match="CLASSIFIER_MAX_MODEL_PARAMETERS"):
        ESTIMATORS["lstm"].check_size({"hidden_size": 1024}, dim=384, classes=6, limit=1_000_000)
    with pytest.raises(InvalidInput, match="CLASSIFIER_MAX_MODEL_PARAMETERS"):
        ESTIMATORS["mlp_regressor"].check_size({"hidden_layer_sizes": [4096, 4096]}, dim=384, classes=1, limit=1_000_000)
