"""The classifier as a real uvicorn process: fit, restart on the same store, predict the same."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from services.codecs import BINARY_CONTENT_TYPE, decode_binary, encode_binary
from tests.classifier_service.synthetic import features_for, fit_body, tensor_json
from tests.processes import running

pytestmark = pytest.mark.integration


def _forkservers(pid: int) -> list[int]:
    """The process's children that are multiprocessing's fork server (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):  # gone meanwhile
            continue
        if parent == pid and b"forkserver" in command:
            found.append(int(stat.parent.name))
    return found


def test_models_survive_a_process_restart(tmp_path):
    """And the fit workers' process server (scikit-learn and torch imported, about 310 MB): started with the
    service by default (CLASSIFIER_FIT_WARMUP=true), never by a replica that only predicts with false."""
    store = tmp_path / "models"
    env = {"CLASSIFIER_STORE": str(store)}
    vectors, labels, contract = features_for("embedding")
    sequences, seq_labels, seq_contract = features_for("tokens")
    with running("classifier_service", env, log=tmp_path / "classifier.log") as service:
        assert httpx.get(service.url + "/healthz").json() == {"status": "alive"}
        deadline = time.monotonic() + 60  # started with the service, in the background, before any fit
        while not _forkservers(service.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_forkservers(service.proc.pid)) == 1, service.log_text()
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

    with running("classifier_service", {**env, "CLASSIFIER_FIT_WARMUP": "false"}, log=tmp_path / "classifier.log") as service:
        assert httpx.get(service.url + "/readyz").json() == {"status": "ready", "models": 2, "skipped": []}
        assert httpx.get(service.url + "/v1/models").json() == listing
        after = httpx.post(service.url + "/v1/models/intents/predict", json={"features": tensor_json(vectors)}).json()
        heads_after = httpx.post(service.url + "/v1/models/heads/predict", content=encode_binary(sequences),
                                 headers={"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE}).content
        assert _forkservers(service.proc.pid) == []  # (a fit would start one: it forks its worker from it)
    assert after == before
    assert decode_binary(heads_after).meta == decode_binary(heads_before).meta
    assert (decode_binary(heads_after).tensor == decode_binary(heads_before).tensor).all()
