"""Where a prediction runs: a few rows of a scikit-learn model already in memory on the event loop
(cheaper than the trip to a worker thread); the torch head, large batches and versions still on disk
in a worker thread. The answers are the same either way."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from classifier_service.runtime import INLINE_PREDICT_ROWS, ClassifierRuntime
from tests.classifier_service.synthetic import classifier_client, features_for, fit, tensor_json


@pytest.fixture
def threads(monkeypatch) -> list[str]:
    """The name of the thread each ``predict_sync`` ran on."""
    seen: list[str] = []
    original = ClassifierRuntime.predict_sync

    def recording(self, *args, **kwargs):
        seen.append("loop" if threading.current_thread() is threading.main_thread() else "worker")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClassifierRuntime, "predict_sync", recording)
    return seen


async def _predict(client, name: str, features, version: int | None = None) -> dict:
    url = f"/v1/models/{name}/predict" + (f"?version={version}" if version else "")
    r = await client.post(url, json={"features": tensor_json(features)})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_few_rows_of_a_scikit_learn_model_run_on_the_event_loop(tmp_path, threads):
    features, _, _ = features_for("embedding", per_class=30, seed=1)
    async with classifier_client(tmp_path) as client:
        assert (await fit(client, "m")).status_code == 201
        few = await _predict(client, "m", features[:3], version=1)
        many = await _predict(client, "m", features[: INLINE_PREDICT_ROWS + 1])
    assert threads == ["loop", "worker"]
    # The same model gives the same answers on either path.
    assert [p["label"] for p in many["predictions"][:3]] == [p["label"] for p in few["predictions"]]
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in many["predictions"][:3]],
                               [list(p["probabilities"].values()) for p in few["predictions"]], atol=1e-12)


async def test_the_torch_head_always_predicts_in_a_worker_thread(tmp_path, threads):
    features, _, _ = features_for("tokens", seed=1)
    async with classifier_client(tmp_path) as client:
        fitted = await fit(client, "heads", "tokens", estimator="attention_pooling", params={"max_epochs": 5})
        assert fitted.status_code == 201
        await _predict(client, "heads", features)  # fewer rows than INLINE_PREDICT_ROWS
    assert threads == ["worker"]


async def test_a_version_not_yet_read_from_disk_is_read_in_a_worker_thread(tmp_path, threads):
    features, _, _ = features_for("embedding", seed=1)
    async with classifier_client(tmp_path) as writer, classifier_client(tmp_path) as reader:
        assert (await fit(writer, "shared")).status_code == 201
        await _predict(reader, "shared", features[:1])  # reader has never seen it: loaded off the loop
        await _predict(reader, "shared", features[:1])  # now in memory
    assert threads == ["worker", "loop"]
