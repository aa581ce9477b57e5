"""The classifier as a real uvicorn process: fit, restart on the same store, predict the same."""

from __future__ import annotations

import httpx
import pytest

from services.codecs import BINARY_CONTENT_TYPE, decode_binary, encode_binary
from tests.classifier_service.synthetic import features_for, fit_body, tensor_json
from tests.processes import running

pytestmark = pytest.mark.integration


def test_models_survive_a_process_restart(tmp_path):
    store = tmp_path / "models"
    env = {"CLASSIFIER_STORE": str(store)}
    vectors, labels, contract = features_for("embedding")
    sequences, seq_labels, seq_contract = features_for("tokens")
    with running("classifier_service", env, log=tmp_path / "classifier.log") as service:
        assert httpx.get(service.url + "/healthz").json() == {"status": "alive"}
        r = httpx.post(service.url + "/v1/models/intents/fit", json=fit_body(vectors, labels, contract), timeout=60)
        assert r.status_code == 201, r.text
        meta = {"labels": seq_labels, "contract": seq_contract.model_dump(), "estimator": "attention_pooling",
                "params": {"max_epochs": 20}}
        r = httpx.post(service.url + "/v1/models/heads/fit", content=encode_binary(sequences, meta),
                       headers={"content-type": BINARY_CONTENT_TYPE}, timeout=60)
        assert r.status_code == 201, r.text
        before = httpx.post(service.url + "/v1/models/intents/predict", json={"features": tensor_json(vectors)}).json()
        heads_before = httpx.post(service.url + "/v1/models/heads/predict", content=encode_binary(sequences),
                                  headers={"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE}).content
        bad = httpx.post(service.url + "/v1/models/intents/predict", json={"features": [[1.0, 2.0]]})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        listing = httpx.get(service.url + "/v1/models").json()

    with running("classifier_service", env, log=tmp_path / "classifier.log") as service:
        assert httpx.get(service.url + "/readyz").json() == {"status": "ready", "models": 2, "skipped": []}
        assert httpx.get(service.url + "/v1/models").json() == listing
        after = httpx.post(service.url + "/v1/models/intents/predict", json={"features": tensor_json(vectors)}).json()
        heads_after = httpx.post(service.url + "/v1/models/heads/predict", content=encode_binary(sequences),
                                 headers={"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE}).content
    assert after == before
    assert decode_binary(heads_after).meta == decode_binary(heads_before).meta
    assert (decode_binary(heads_after).tensor == decode_binary(heads_before).tensor).all()
