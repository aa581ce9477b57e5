"""Bad requests get a 4xx problem+json that names what was wrong; never a 500."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.codecs import BINARY_CONTENT_TYPE, Ragged
from tests.classifier_service.synthetic import tensor_json
from services.contracts import TensorContract
from tests.classifier_service.synthetic import (
    DIM,
    MAX_TOKENS,
    SPACE,
    binary,
    classifier_client,
    embedding_contract,
    features_for,
    fit,
    fit_body,
)


def problem(r, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    return body


def mismatch_fields(body: dict) -> list[str]:
    return [m["field"] for m in body["mismatches"]]


# -- estimators and parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "estimator", "allowed"),
    [
        ("embedding", "attention_pooling", ["logistic_regression", "gaussian_nb", "linear_svm", "mlp"]),
        ("tokens", "logistic_regression", ["mean_pooling", "attention_pooling", "lstm"]),
        ("probabilities", "linear_svm", ["gaussian_nb", "logistic_regression"]),
    ],
)
async def test_estimator_that_does_not_fit_the_kind_lists_those_that_do(client, kind, estimator, allowed):
    body = problem(await fit(client, "m", kind, estimator=estimator), 422, "incompatible-estimator")
    assert body["allowed"] == allowed and body["kind"] == kind and body["estimator"] == estimator
    assert all(name in body["detail"] for name in allowed)


async def test_unknown_estimator(client):
    body = problem(await fit(client, "m", estimator="random_forest"), 422, "invalid-input")
    assert body["allowed"] == ["logistic_regression", "gaussian_nb", "linear_svm", "mlp"]


@pytest.mark.parametrize(("kind", "estimator"), [("embedding", "logistic_regression"), ("tokens", "attention_pooling")])
async def test_unknown_params_are_named_with_the_accepted_ones(client, kind, estimator):
    body = problem(await fit(client, "m", kind, estimator=estimator, params={"learning_rat": 0.1}), 422, "invalid-input")
    assert body["unknown_params"] == ["learning_rat"]
    assert "learning_rat" in body["detail"]
    expected = "C" if estimator == "logistic_regression" else "learning_rate"
    assert expected in body["accepted_params"]
    assert "penalty" not in body["accepted_params"]  # deprecated by scikit-learn: not offered


@pytest.mark.parametrize(
    ("kind", "estimator", "params", "named"),
    [
        ("embedding", "logistic_regression", {"C": -1}, "'C'"),
        ("embedding", "mlp", {"hidden_layer_sizes": "wide"}, "hidden_layer_sizes"),
        ("embedding", "linear_svm", {"calibration_method": "magic"}, "'method'"),
        ("tokens", "attention_pooling", {"max_epochs": 0}, "max_epochs"),
    ],
)
async def test_bad_param_values(client, kind, estimator, params, named):
    body = problem(await fit(client, "m", kind, estimator=estimator, params=params), 422, "invalid-input")
    assert named in body["detail"]


async def test_linear_svm_needs_two_examples_per_class(client):
    features, labels, contract = features_for("embedding", per_class=3)
    body = fit_body(features, labels[:-1] + ["cancel"], contract, estimator="linear_svm")
    problem(await client.post("/v1/models/m/fit", json=body), 422, "invalid-input")


# -- fit data -----------------------------------------------------------------------------------


async def test_fit_data_refusals(client):
    features, labels, contract = features_for("embedding")
    cases = {
        "one class": fit_body(features, ["billing"] * len(labels), contract),
        "labels short": fit_body(features, labels[:-1], contract),
        "no features": {"features": [], "labels": [], "contract": contract.model_dump()},
        "empty label": fit_body(features, [""] + labels[1:], contract),
    }
    for case, body in cases.items():
        r = await client.post("/v1/models/m/fit", json=body)
        assert problem(r, 422, "invalid-input")["detail"], case
    wide = fit_body(features, labels, embedding_contract(dim=DIM + 1))
    body = problem(await client.post("/v1/models/m/fit", json=wide), 422, "feature-mismatch")
    assert body["mismatches"][0] | {"expected": DIM + 1, "actual": DIM} == body["mismatches"][0]
    bad = features.copy()
    bad[3, 1] = np.nan
    r = await client.post("/v1/models/m/fit", **binary(bad, labels=labels, contract=contract.model_dump()))
    assert "row 3" in problem(r, 422, "feature-mismatch")["detail"]
    assert (await client.get("/v1/models")).json()["models"] == []


async def test_request_shape_refusals(client):
    problem(await client.post("/v1/models/m/fit", json={"labels": ["a"]}), 422, "invalid-input")
    r = await client.post("/v1/models/m/fit", content=b"{not json", headers={"content-type": "application/json"})
    problem(r, 400, "malformed-request")
    r = await client.post("/v1/models/m/fit", content=b"SEAM\x00", headers={"content-type": BINARY_CONTENT_TYPE})
    problem(r, 400, "malformed-request")
    r = await client.post("/v1/models/m/fit", content=b"a,b", headers={"content-type": "text/csv"})
    problem(r, 415, "unsupported-media-type")
    features, labels, contract = features_for("embedding")
    r = await client.post("/v1/models/m/fit", json=fit_body(features, labels, contract, colour="blue"))
    assert problem(r, 422, "invalid-input")["errors"][0]["field"] == "colour"
    bad_contract = {**contract.model_dump(), "kind": "pixels"}
    r = await client.post("/v1/models/m/fit", json={**fit_body(features, labels, contract), "contract": bad_contract})
    assert problem(r, 422, "invalid-input")["errors"][0]["field"].startswith("contract")


@pytest.mark.parametrize("url", ["/v1/models/Bad%20Name/fit", "/v1/models/..%2Fx/fit", "/v1/models/../x/fit",
                                 "/v1/models/-x/fit", "/v1/models/" + "a" * 65 + "/fit", "/v1/models/Bad%20Name"])
async def test_bad_model_names(client, store, url):
    features, labels, contract = features_for("embedding")
    r = await client.post(url, json=fit_body(features, labels, contract))
    assert r.status_code in (404, 405, 422) and r.headers["content-type"] == "application/problem+json"
    assert not store.exists() or [p.name for p in store.iterdir()] == []


# -- predict features against the input contract ------------------------------------------------


async def test_unknown_model_and_version(client):
    features, _, _ = features_for("embedding")
    body = problem(await client.post("/v1/models/nobody/predict", json={"features": tensor_json(features)}), 404, "model-not-found")
    assert body["name"] == "nobody"
    await fit(client, "m")
    body = problem(await client.post("/v1/models/m/predict?version=7", json={"features": tensor_json(features)}), 404,
                   "model-not-found")
    assert body["versions"] == [1]
    problem(await client.get("/v1/models/m/versions/2"), 404, "model-not-found")
    problem(await client.post("/v1/models/m/predict?version=0", json={"features": tensor_json(features)}), 422, "invalid-input")


async def test_dense_feature_refusals(client):
    await fit(client, "m")
    features, _, _ = features_for("embedding")

    async def predict(**kwargs):
        return await client.post("/v1/models/m/predict", **kwargs)

    body = problem(await predict(json={"features": tensor_json(features[:, :4])}), 422, "feature-mismatch")
    assert body["mismatches"][0]["field"] == "dim"
    assert (body["mismatches"][0]["expected"], body["mismatches"][0]["actual"]) == (DIM, 4)
    assert body["name"] == "m" and body["version"] == 1
    assert "expected 8, got 4" in body["detail"]

    raw = json.dumps({"features": [[float("nan")] * DIM, [1.0] * DIM]})
    r = await predict(content=raw, headers={"content-type": "application/json"})
    assert "NaN or infinity in row 0" in problem(r, 422, "feature-mismatch")["detail"]
    inf = features.copy()
    inf[2, 0] = np.inf
    assert mismatch_fields(problem(await predict(**binary(inf)), 422, "feature-mismatch")) == ["values"]

    ragged_rows = [[1.0] * DIM, [1.0] * (DIM - 1)]
    body = problem(await predict(json={"features": ragged_rows}), 422, "feature-mismatch")
    assert mismatch_fields(body) == ["shape"] and "ragged rows" in body["mismatches"][0]["message"]
    tokens = [[[1.0] * DIM, [2.0] * DIM]]
    assert mismatch_fields(problem(await predict(json={"features": tokens}), 422, "feature-mismatch")) == ["kind"]
    sequences = Ragged.from_rows([np.ones((2, DIM), np.float32)])
    assert mismatch_fields(problem(await predict(**binary(sequences)), 422, "feature-mismatch")) == ["kind"]
    problem(await predict(json={"features": [["a"] * DIM]}), 422, "invalid-input")
    problem(await predict(json={"features": []}), 422, "invalid-input")


async def test_declared_contract_is_checked(client):
    await fit(client, "m")
    features, _, contract = features_for("embedding")
    other_space = SPACE.model_copy(update={"model_id": "another-encoder"})
    declared = TensorContract(kind="embedding", dim=DIM, dtype="bfloat16", space=other_space)
    r = await client.post("/v1/models/m/predict", json={"features": tensor_json(features), "contract": declared.model_dump()})
    body = problem(r, 422, "feature-mismatch")
    assert set(mismatch_fields(body)) == {"dtype", "space.model_id"}


async def test_sequence_refusals(client):
    await fit(client, "t", "tokens")
    ok = np.ones((3, DIM), np.float32)
    empty = Ragged.from_rows([ok, np.zeros((0, DIM), np.float32)], dim=DIM)
    body = problem(await client.post("/v1/models/t/predict", **binary(empty)), 422, "feature-mismatch")
    assert mismatch_fields(body) == ["sequence_length"] and "0 tokens in row 1" in body["detail"]
    long = Ragged.from_rows([ok, np.ones((MAX_TOKENS + 1, DIM), np.float32)])
    body = problem(await client.post("/v1/models/t/predict", **binary(long)), 422, "feature-mismatch")
    assert f"{MAX_TOKENS + 1} tokens in row 1" in body["detail"]
    body = problem(await client.post("/v1/models/t/predict", json={"features": [[1.0] * DIM]}), 422, "feature-mismatch")
    assert mismatch_fields(body) == ["kind"]
    body = problem(await client.post("/v1/models/t/predict", **binary(np.ones((2, DIM), np.float32))), 422, "feature-mismatch")
    assert mismatch_fields(body) == ["kind"]
    wide = Ragged.from_rows([np.ones((2, DIM + 2), np.float32)])
    assert mismatch_fields(problem(await client.post("/v1/models/t/predict", **binary(wide)), 422, "feature-mismatch")) == ["dim"]
    nan = Ragged.from_rows([ok, ok, np.full((2, DIM), np.nan, np.float32)])
    assert "row 2" in problem(await client.post("/v1/models/t/predict", **binary(nan)), 422, "feature-mismatch")["detail"]


async def test_probability_refusals(client):
    await fit(client, "p", "probabilities")
    r = await client.post("/v1/models/p/predict", json={"features": [[0.2, 0.2, 0.2], [0.1, 0.1, 0.8]]})
    body = problem(r, 422, "feature-mismatch")
    assert mismatch_fields(body) == ["row_sum"] and "0.6 in row 0" in body["detail"]
    r = await client.post("/v1/models/p/predict", json={"features": [[1.5, -0.5, 0.0]]})
    assert mismatch_fields(problem(r, 422, "feature-mismatch")) == ["values"]
    r = await client.post("/v1/models/p/predict", json={"features": [[0.5, 0.5]]})
    assert mismatch_fields(problem(r, 422, "feature-mismatch")) == ["dim"]
    # within the 1e-3 tolerance: accepted
    assert (await client.post("/v1/models/p/predict", json={"features": [[0.3, 0.3, 0.4005]]})).status_code == 200


async def test_size_limits(store):
    features, labels, contract = features_for("embedding")
    async with classifier_client(store, max_predict_rows=4, max_fit_rows=20, max_body_bytes=20_000) as client:
        problem(await client.post("/v1/models/m/fit", json=fit_body(features, labels, contract)), 413, "payload-too-large")
        small = fit_body(features[:18], labels[:18], contract)
        assert (await client.post("/v1/models/m/fit", json=small)).status_code == 201
        body = problem(await client.post("/v1/models/m/predict", json={"features": tensor_json(features[:5])}), 413,
                       "payload-too-large")
        assert body["limit_rows"] == 4
        huge = np.zeros((1000, DIM), np.float32)
        problem(await client.post("/v1/models/m/predict", json={"features": tensor_json(huge)}), 413, "payload-too-large")


async def test_internal_token(store):
    async with classifier_client(store, internal_token="s3cret") as client:
        assert (await client.get("/healthz")).status_code == 200
        problem(await client.get("/v1/models"), 401, "unauthorized")
        problem(await client.get("/v1/models", headers={"x-seam-internal-token": "nope"}), 403, "forbidden")
        assert (await client.get("/v1/models", headers={"x-seam-internal-token": "s3cret"})).status_code == 200
