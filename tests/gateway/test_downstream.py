"""Evaluate, regression, OOD and drift through the gateway, with the real encoder (a tiny BERT) and
classifier in process."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score, confusion_matrix, f1_score, log_loss, mean_absolute_error, precision_recall_fscore_support,
    r2_score, root_mean_squared_error,
)

from tests.support import world

TEXTS = ["where is my parcel", "my parcel is late", "the package was lost", "delivery arrived late",
         "i was charged twice", "refund my payment", "the invoice is wrong", "cancel my subscription",
         "reset my password", "login to my account", "change my email address", "my account password"] * 2
LABELS = (["shipping"] * 4 + ["billing"] * 4 + ["account"] * 4) * 2
TARGETS = [float(len(t)) / 10 for t in TEXTS]
HELD_OUT = ["my parcel was lost", "i was charged for my subscription", "reset my email password",
            "the delivery is late", "refund the invoice", "login to my email"]
HELD_LABELS = ["shipping", "billing", "account", "shipping", "billing", "account"]


@pytest.fixture
async def stack(tiny_bert, tmp_path):
    async with world(tiny_bert, tmp_path / "models", gateway={"max_texts": 4, "drift_window": 5}) as w:
        yield w


async def test_evaluate_equals_scikit_learn_on_the_same_predictions(stack):
    g = stack.gateway
    assert (await g.post("/v1/pipelines/intents/train", json={"texts": TEXTS, "labels": LABELS})).status_code == 201
    r = await g.post("/v1/pipelines/intents/evaluate", json={"texts": HELD_OUT, "labels": HELD_LABELS})
    assert r.status_code == 200, r.text
    m = r.json()["metrics"]
    predicted = (await g.post("/v1/pipelines/intents/predict", json={"texts": HELD_OUT[:4]})).json()["predictions"]
    predicted += (await g.post("/v1/pipelines/intents/predict", json={"texts": HELD_OUT[4:]})).json()["predictions"]
    classes = m["classes"]
    assert classes == ["account", "billing", "shipping"]  # the version's order
    p = np.array([[row["probabilities"][c] for c in classes] for row in predicted])
    guess = [classes[i] for i in p.argmax(axis=1)]
    assert m["accuracy"] == pytest.approx(accuracy_score(HELD_LABELS, guess))
    assert m["macro_f1"] == pytest.approx(f1_score(HELD_LABELS, guess, average="macro", zero_division=0))
    precision, recall, _, support = precision_recall_fscore_support(HELD_LABELS, guess, labels=classes, zero_division=0)
    for i, c in enumerate(classes):
        assert (m["per_class"][c]["precision"], m["per_class"][c]["recall"], m["per_class"][c]["support"]) == (
            pytest.approx(precision[i]), pytest.approx(recall[i]), support[i])
    assert m["confusion_matrix"] == confusion_matrix(HELD_LABELS, guess, labels=classes).tolist()
    p = p / p.sum(axis=1, keepdims=True)  # float32 on the wire: sums off by ~1e-7, which sklearn warns about
    assert m["log_loss"] == pytest.approx(log_loss(HELD_LABELS, p, labels=classes), rel=1e-5)
    assert 0 <= m["ece"] <= 1 and sum(b["count"] for b in m["reliability"]) == len(HELD_OUT)
    assert r.json()["ood"]["mean_score"] is not None
    unknown = await g.post("/v1/pipelines/intents/evaluate", json={"texts": HELD_OUT[:1], "labels": ["weather"]})
    assert unknown.status_code == 422 and "'weather'" in unknown.json()["detail"]


async def test_a_regression_pipeline_trains_predicts_evaluates_and_feeds_no_chain(stack):
    g = stack.gateway
    r = await g.post("/v1/pipelines/length/train", json={"texts": TEXTS, "targets": TARGETS, "preprocess": ["standardize"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["task"] == "regression" and body["estimator"] == "ridge" and body["classes"] == []
    assert {"cv_r2", "cv_mae", "cv_rmse"} <= set(body["metrics"]) and body["preprocess"] == [{"standardize": {}}]
    predicted = (await g.post("/v1/pipelines/length/predict", json={"texts": HELD_OUT[:3]})).json()["predictions"]
    assert all(isinstance(p["value"], float) and 0 <= p["ood"] <= 1 and "label" not in p for p in predicted)
    truth = [float(len(t)) / 10 for t in HELD_OUT]
    ev = await g.post("/v1/pipelines/length/evaluate", json={"texts": HELD_OUT, "targets": truth})
    assert ev.status_code == 200, ev.text
    values = [p["value"] for p in (await g.post("/v1/pipelines/length/predict", json={"texts": HELD_OUT[:4]})).json()["predictions"]]
    values += [p["value"] for p in (await g.post("/v1/pipelines/length/predict", json={"texts": HELD_OUT[4:]})).json()["predictions"]]
    m = ev.json()["metrics"]
    assert m["r2"] == pytest.approx(r2_score(truth, values), abs=1e-6)
    assert m["mae"] == pytest.approx(mean_absolute_error(truth, values), abs=1e-6)
    assert m["rmse"] == pytest.approx(root_mean_squared_error(truth, values), abs=1e-6)
    chained = await g.post("/v1/pipelines/child/train", json={"texts": TEXTS, "labels": LABELS, "feature": "pipeline:length"})
    assert chained.status_code == 422 and "regressor" in chained.json()["detail"]
    assert "cannot feed another pipeline" in chained.json()["detail"]
    nan = await g.post("/v1/pipelines/length/evaluate", content=b'{"texts": ["hello"], "targets": [NaN]}',
                       headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "finite" in nan.json()["detail"]


async def test_drift_keeps_a_window_and_a_histogram(stack):
    g = stack.gateway
    assert (await g.post("/v1/pipelines/intents/train", json={"texts": TEXTS, "labels": LABELS})).status_code == 201
    empty = (await g.get("/v1/pipelines/intents/drift")).json()
    assert empty["predictions"] == 0 and empty["mean_score"] is None and empty["window"] == 5
    scores = []
    for text in HELD_OUT:
        scores.append((await g.post("/v1/pipelines/intents/predict", json={"texts": [text]})).json()["predictions"][0]["ood"])
    report = (await g.get("/v1/pipelines/intents/drift")).json()
    assert report["predictions"] == 5  # GATEWAY_DRIFT_WINDOW
    assert report["mean_score"] == pytest.approx(np.mean(scores[-5:]))
    assert report["threshold"] == 0.99 and report["baseline"]["mean_score"] == 0.5
    metrics = (await g.get("/metrics")).text
    assert 'seam_ood_score_count{pipeline="intents"} 6.0' in metrics
    assert (await g.get("/v1/pipelines/nothing/drift")).status_code == 404
