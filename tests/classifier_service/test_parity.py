"""Parity with the plain in-process recipe, on the real MiniLM and the project's sample dataset:
the service gives the labels and probabilities scikit-learn gives in-process with the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.naive_bayes import GaussianNB

from classifier_service.estimator_types import mean_pool
from services.codecs import BINARY_CONTENT_TYPE, Ragged, decode_binary
from services.contracts import TensorContract
from tests.classifier_service.synthetic import binary, tensor_json

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def split(support_intents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.array(support_intents[1])
    train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    return labels, train, test


def _probabilities(answer: dict) -> np.ndarray:
    return np.array([[row["probabilities"][c] for c in answer["classes"]] for row in answer["predictions"]])


async def test_embeddings_logistic_regression_parity(client, minilm_features, split, capsys):
    labels, train, test = split
    X = minilm_features.embeddings
    body = {"features": tensor_json(X[train]), "labels": labels[train].tolist(),
            "contract": minilm_features.embedding_contract.model_dump(), "estimator": "logistic_regression"}
    record = (await client.post("/v1/models/intents/fit", json=body)).json()
    reference = LogisticRegression(**record["params"]).fit(X[train], labels[train])
    assert record["classes"] == reference.classes_.tolist()

    answer = (await client.post("/v1/models/intents/predict", json={"features": tensor_json(X[test])})).json()
    expected = reference.predict_proba(X[test])
    np.testing.assert_allclose(_probabilities(answer), expected, rtol=0, atol=1e-6)
    assert [row["label"] for row in answer["predictions"]] == reference.predict(X[test]).tolist()

    request = binary(X[test])
    request["headers"]["accept"] = BINARY_CONTENT_TYPE
    frame = decode_binary((await client.post("/v1/models/intents/predict", **request)).content)
    np.testing.assert_allclose(frame.tensor, expected, rtol=0, atol=1e-6)
    assert frame.meta["labels"] == reference.predict(X[test]).tolist()
    accuracy = np.mean(reference.predict(X[test]) == labels[test])
    with capsys.disabled():
        print(f"\nsupport intents, MiniLM embeddings -> logistic_regression: held-out accuracy {accuracy:.3f} (split 0)")
    assert accuracy > 0.8  # the recipe itself works


async def test_probabilities_gaussian_nb_parity(client, minilm_features, split, capsys):
    labels, train, test = split
    # Honest distributions: each row's probabilities come from a logistic regression that never saw it.
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    upstream = LogisticRegression(max_iter=1000)
    P = cross_val_predict(upstream, minilm_features.embeddings, labels, cv=folds, method="predict_proba")
    P = P.astype(np.float32)  # what the wire carries
    classes = sorted(set(labels))
    contract = TensorContract(kind="probabilities", dim=len(classes), labels=classes)
    r = await client.post("/v1/models/second/fit", **binary(P[train], labels=labels[train].tolist(),
                                                            contract=contract.model_dump(), estimator="gaussian_nb"))
    record = r.json()
    reference = GaussianNB(**record["params"]).fit(P[train], labels[train])

    answer = (await client.post("/v1/models/second/predict", json={"features": tensor_json(P[test])})).json()
    np.testing.assert_allclose(_probabilities(answer), reference.predict_proba(P[test]), rtol=0, atol=1e-6)
    assert [row["label"] for row in answer["predictions"]] == reference.predict(P[test]).tolist()
    accuracy = np.mean(reference.predict(P[test]) == labels[test])
    with capsys.disabled():
        print(f"\nsupport intents, out-of-fold LR probabilities -> gaussian_nb: held-out accuracy {accuracy:.3f} (split 0)")


async def test_sequences_mean_pooling_vs_attention_pooling(client, minilm_features, support_intents, capsys):
    """Reports held-out accuracy of both sequence estimators over three stratified splits (no claim that
    one wins), and checks mean_pooling against the in-process recipe: masked mean, then logistic regression."""
    labels = np.array(support_intents[1])
    tokens = minilm_features.tokens
    rows = tokens.rows()
    contract = minilm_features.tokens_contract.model_dump()
    accuracies: dict[str, list[float]] = {"mean_pooling": [], "attention_pooling": []}
    notes: dict[str, list[str]] = {"mean_pooling": [], "attention_pooling": []}
    for seed in range(3):
        train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=seed)
        train_tokens = Ragged.from_rows([rows[i] for i in train], dim=tokens.dim)
        test_tokens = Ragged.from_rows([rows[i] for i in test], dim=tokens.dim)
        for estimator in accuracies:
            name = f"{estimator.replace('_', '-')}-{seed}"
            fields = {"labels": labels[train].tolist(), "contract": contract, "estimator": estimator}
            r = await client.post(f"/v1/models/{name}/fit", **binary(train_tokens, **fields))
            assert r.status_code == 201, r.text
            record = r.json()
            answer = (await client.post(f"/v1/models/{name}/predict", **binary(test_tokens))).json()
            predicted = np.array([row["label"] for row in answer["predictions"]])
            accuracies[estimator].append(float(np.mean(predicted == labels[test])))
            metrics = record["metrics"]
            notes[estimator].append(
                f"cv {metrics['cv_accuracy']:.3f}" if metrics["cv_accuracy"] is not None
                else f"stopped {metrics['best_epoch']}/{metrics['epochs']}"
            )
            if estimator == "mean_pooling":
                reference = LogisticRegression(**record["params"]).fit(mean_pool(train_tokens), labels[train])
                np.testing.assert_allclose(
                    _probabilities(answer), reference.predict_proba(mean_pool(test_tokens)), rtol=0, atol=1e-6
                )
    with capsys.disabled():
        print(f"\nsupport intents ({len(labels)} texts, 6 intents), MiniLM token vectors, 75/25 stratified splits 0-2:")
        for estimator, values in accuracies.items():
            splits = ", ".join(f"{a:.3f}" for a in values)
            print(f"  {estimator:18s} held-out accuracy {np.mean(values):.3f}  [{splits}]  ({'; '.join(notes[estimator])})")
    for values in accuracies.values():
        assert np.mean(values) > 0.5  # both learn the task; six intents give 1/6 by chance
