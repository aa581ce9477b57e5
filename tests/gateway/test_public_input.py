"""Bad public input gets a 4xx problem+json that says what is wrong; never a 500."""

from __future__ import annotations

import pytest

from tests.support import assert_problem

GOOD = {"texts": ["where is my parcel", "charged twice"], "labels": ["shipping", "billing"],
        "estimator": "logistic_regression", "feature": "embedding"}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"texts": []}, "texts: List should have at least 1 item"),
        ({"texts": ["ok", 3]}, "texts.1: Input should be a valid string"),
        ({"texts": ["ok", None]}, "texts.1"),
        ({"labels": ["shipping"]}, "2 texts but 1 labels"),
        ({"labels": ["shipping", 1]}, "labels.1"),
        ({"feature": "logits"}, "unknown feature 'logits'"),
        ({"feature": "pipeline:"}, "is not a valid pipeline name"),
        ({"feature": "pipeline:../x"}, "'../x' is not a valid pipeline name"),
        ({"feature": "pipeline:intents"}, "cannot be fed by its own probabilities"),
        ({"texts": ["ok", "   "]}, "texts[1] is empty"),
        ({"estimator": 5}, "estimator"),
        ({"params": [1]}, "params"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_train_requests(client, change, needle):
    response = await client.post("/v1/pipelines/intents/train", json={**GOOD, **change})
    assert_problem(response, 422, needle)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"texts": []}, "at least 1 item"),
        ({"texts": "hello"}, "valid list"),
        ({"texts": [["nested"]]}, "texts.0"),
        ({}, "texts: Field required"),
        ({"texts": [""]}, "texts[0] is empty"),
    ],
)
async def test_bad_predict_requests(client, body, needle):
    assert_problem(await client.post("/v1/pipelines/intents/predict", json=body), 422, needle)


async def test_unknown_pipeline_is_404(client):
    response = await client.post("/v1/pipelines/nothing-here/predict", json={"texts": ["hi"]})
    assert_problem(response, 404, "no pipeline named 'nothing-here'")
    assert response.json()["type"].endswith("/pipeline-not-found")
    assert_problem(await client.get("/v1/pipelines/nothing-here"), 404, "no pipeline named")
    assert_problem(await client.post("/v1/pipelines/nothing-here/train", json={**GOOD, "feature": "pipeline:gone"}),
                   404, "no pipeline named 'gone'")


async def test_unknown_version_is_404(client):
    assert (await client.post("/v1/pipelines/intents/train", json=GOOD)).status_code == 201
    response = await client.post("/v1/pipelines/intents/predict?version=7", json={"texts": ["hi"]})
    assert_problem(response, 404, "has no version 7")
    assert_problem(await client.post("/v1/pipelines/intents/predict?version=0", json={"texts": ["hi"]}), 422, "version")


@pytest.mark.parametrize("path", ["/v1/pipelines/%2E%2E/predict", "/v1/pipelines/Intents/predict",
                                  "/v1/pipelines/a%20b/predict", "/v1/pipelines/" + "x" * 65 + "/predict"])
async def test_bad_pipeline_names_are_refused(client, path):
    assert_problem(await client.post(path, json={"texts": ["hi"]}), 422, "is not a valid pipeline name")


async def test_path_traversal_never_reaches_a_route(client):
    for path in ("/v1/pipelines/../x/predict", "/v1/pipelines/..%2Fx/predict"):
        response = await client.post(path, json={"texts": ["hi"]})
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.headers["content-type"] == "application/problem+json"


async def test_too_many_texts_is_413(client, settings):
    texts = ["hello"] * (settings.max_texts + 1)
    assert_problem(await client.post("/v1/pipelines/intents/predict", json={"texts": texts}), 413, "GATEWAY_MAX_TEXTS")


async def test_malformed_json_is_400(client):
    response = await client.post("/v1/pipelines/intents/predict", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_oversized_body_is_413(client, settings):
    body = b'{"texts": ["' + b"a" * settings.max_body_bytes + b'"]}'
    response = await client.post("/v1/pipelines/intents/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
