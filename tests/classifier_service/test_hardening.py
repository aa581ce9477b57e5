"""Issue 15, the classifier's part: nothing silently wrong, nothing unbounded.

Version numbers are never reused; non-finite probabilities are never answered; estimator
parameters are strict and bounded; fits are bounded in time; an unwritable store is a 507; a model
deleted during a save is a 409; free-form fields, labels and version numbers are checked first."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from classifier_service.estimator_types import SklearnEstimator
from classifier_service.directory_store import ModelStore
from services.codecs import BINARY_CONTENT_TYPE, encode_binary
from tests.classifier_service.synthetic import DIM, classifier_client, features_for, fit, fit_body, tensor_json

EXTREME = [[1e38] * (DIM // 2) + [-1e38] * (DIM // 2)]  # finite, but its arithmetic overflows


def _write(tag: str):
    return lambda folder: (folder / "a.bin").write_bytes(tag.encode())


# -- version numbers ------------------------------------------------------------------------------


def test_numbers_are_never_reused_after_delete(tmp_path):
    store = ModelStore(tmp_path)
    assert [store.save("m", {}, _write("x")) for _ in range(2)] == [1, 2]
    assert store.delete("m")
    assert store.save("m", {}, _write("y")) == 3  # max(ever) + 1, not 1
    other = ModelStore(tmp_path)  # another replica on the same store agrees
    assert other.highest_claimed("m") == 3 and other.save("m", {}, _write("z")) == 4


def test_claims_race_between_stores_and_respect_versions_without_claims(tmp_path):
    stores = [ModelStore(tmp_path) for _ in range(4)]
    got: list[int] = []
    lock = threading.Lock()

    def claim(store: ModelStore) -> None:
        for _ in range(25):
            n = store.claim_version("m")
            with lock:
                got.append(n)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 101))  # distinct, no gap
    # a version written before claims existed (or by hand) is never overwritten
    (tmp_path / "legacy" / "7").mkdir(parents=True)
    assert stores[0].save("legacy", {}, _write("x")) == 8


async def test_delete_then_fit_gives_the_next_number(client):
    assert (await fit(client, "m")).json()["version"] == 1
    assert (await client.delete("/v1/models/m")).status_code == 204
    r = await fit(client, "m")
    assert r.status_code == 201 and r.json()["version"] == 2
    assert (await client.get("/v1/models/m/versions/1")).status_code == 404


# -- non-finite outputs ---------------------------------------------------------------------------


async def test_extreme_features_are_refused_on_every_predict_path(client):
    assert (await fit(client, "m")).status_code == 201
    good, _, _ = features_for("embedding", seed=1)
    rows = tensor_json(good[:2]) + EXTREME
    r = await client.post("/v1/models/m/predict", json={"features": rows})
    assert r.status_code == 422 and "row 2 cannot be classified" in r.json()["detail"] and r.json()["rows"] == [2]
    frame = encode_binary(np.array(rows, np.float32), {})
    r = await client.post("/v1/models/m/predict", content=frame,
                          headers={"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE})
    assert r.status_code == 422 and "row 2" in r.json()["detail"]
    infer = {"inputs": [{"name": "FEATURES", "shape": [3, DIM], "datatype": "FP32", "data": rows}]}
    r = await client.post("/v2/models/m/infer", json=infer)
    assert r.status_code == 422 and "row 2" in r.json()["error"] and b"NaN" not in r.content
    assert (await client.post("/v1/models/m/predict", json={"features": rows[:2]})).status_code == 200


async def test_a_degenerate_fit_is_refused_at_fit_time(client):
    _, labels, contract = features_for("embedding")
    identical = np.ones((len(labels), DIM), np.float32)
    r = await client.post("/v1/models/nb/fit", json=fit_body(identical, labels, contract, estimator="gaussian_nb"))
    assert r.status_code == 422
    assert "degenerate" in r.json()["detail"] and "variance is zero" in r.json()["detail"]
    assert (await client.get("/v1/models/nb")).status_code == 404  # nothing saved


# -- estimator parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("estimator, params, says", [
    ("mlp", {"hidden_layer_sizes": [10**7]}, "CLASSIFIER_MAX_MODEL_PARAMETERS"),
    ("mlp", {"hidden_layer_sizes": {"a": 1}}, "hidden_layer_sizes must be a non-empty list"),
    ("mlp", {"hidden_layer_sizes": [1.5]}, "hidden_layer_sizes must be a non-empty list"),
    ("mlp", {"hidden_layer_sizes": [True]}, "hidden_layer_sizes must be a non-empty list"),
    ("mlp", {"hidden_layer_sizes": []}, "hidden_layer_sizes must be a non-empty list"),
    ("mlp", {"max_iter": True}, "max_iter must be an int in the range [1, inf); got true"),
    ("logistic_regression", {"max_iter": False}, "max_iter must be"),
    ("logistic_regression", {"C": True}, "C must be"),
])
async def test_parameters_are_strict_and_bounded(client, estimator, params, says):
    r = await fit(client, "m", estimator=estimator, params=params)
    assert r.status_code == 422 and says in r.json()["detail"], r.text


async def test_attention_head_parameters_are_strict(client):
    r = await fit(client, "m", "tokens", estimator="attention_pooling", params={"max_epochs": True})
    assert r.status_code == 422 and "max_epochs" in r.json()["detail"]


async def test_the_weight_bound_is_a_setting(store):
    async with classifier_client(store, max_model_parameters=100) as client:
        r = await fit(client, "m", estimator="mlp", params={"hidden_layer_sizes": [10]})
        assert r.status_code == 422 and "would hold 123 weights" in r.json()["detail"]


# -- fits bounded in time -------------------------------------------------------------------------


async def test_a_fit_past_its_time_limit_is_stopped_and_frees_its_worker(store):
    endless = {"hidden_layer_sizes": [64], "max_iter": 10**8, "tol": 0.0, "n_iter_no_change": 10**8}
    async with classifier_client(store, fit_timeout_s=120) as client:
        workers = client.app.state.runtime._workers
        assert (await fit(client, "m")).status_code == 201  # a warm worker: its start is not timed below
        workers.timeout_s = 1.5
        started = time.monotonic()
        r = await fit(client, "m", estimator="mlp", params=endless)
        assert r.status_code == 422 and "CLASSIFIER_FIT_TIMEOUT_S" in r.json()["detail"], r.text
        assert time.monotonic() - started < 15
        assert workers._idle == [] and workers._busy == set()  # the worker was killed, not kept
        workers.timeout_s = 120  # (a loaded test machine may need more than 1.5 s for a plain fit)
        assert (await fit(client, "m")).status_code == 201  # a fresh worker serves the next fit
        assert [w.process.is_alive() for w in workers._idle] == [True]  # and stays warm
    assert workers._idle == []


# -- the store: unwritable, deleted meanwhile -----------------------------------------------------


async def test_an_unwritable_store_is_a_507_naming_it_and_nothing_is_lost(client, store, monkeypatch):
    assert (await fit(client, "m")).status_code == 201
    rename = os.rename

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "rename", read_only)
    for r in (await fit(client, "m"), await client.delete("/v1/models/m")):
        assert r.status_code == 507, r.text
        assert "read-only (EROFS)" in r.json()["detail"] and str(store) in r.json()["detail"]
    monkeypatch.setattr(os, "rename", rename)
    assert [p.name for p in (store / "m").iterdir()] == ["1"]
    assert (await client.get("/v1/models/m")).json()["latest"]["version"] == 1


async def test_a_model_deleted_during_a_save_is_a_409(client, store, monkeypatch):
    save = SklearnEstimator.save

    def deleted_by_another_classifier(self, model, folder: Path) -> None:
        save(self, model, folder)
        assert ModelStore(store).delete("m")  # a replica sharing the store deletes the model now

    monkeypatch.setattr(SklearnEstimator, "save", deleted_by_another_classifier)
    r = await fit(client, "m")
    assert r.status_code == 409 and "deleted meanwhile" in r.json()["detail"], r.text
    monkeypatch.undo()
    assert (await client.get("/v1/models/m")).status_code == 404
    assert (await fit(client, "m")).json()["version"] == 1  # it died before claiming a number: 1 was never used


# -- cheap checks first ---------------------------------------------------------------------------


async def test_free_form_fields_labels_and_versions_are_checked_first(client):
    def nested(depth: int) -> object:
        deep: object = 1
        for _ in range(depth):
            deep = {"a": deep}
        return deep

    # 900 deep: the body itself is refused before it is parsed (CLASSIFIER_MAX_JSON_DEPTH, 64)...
    r = await fit(client, "m", source=nested(900))
    assert r.status_code == 400 and "CLASSIFIER_MAX_JSON_DEPTH" in r.json()["detail"]
    # ...and a source within the body's depth but deeper than a recorded field may be is a 422.
    r = await fit(client, "m", source=nested(40))
    assert r.status_code == 422 and "CLASSIFIER_MAX_SOURCE_DEPTH" in r.json()["detail"]
    r = await fit(client, "m", source={"note": "x" * 70_000})
    assert r.status_code == 413 and "CLASSIFIER_MAX_SOURCE_BYTES" in r.json()["detail"]
    features, labels, contract = features_for("embedding")
    for blank in (" ", "  ", ""):
        body = fit_body(features, [blank] * 15 + labels[15:], contract)
        r = await client.post("/v1/models/m/fit", json=body)
        assert r.status_code == 422 and "labels[0] is" in r.json()["detail"], r.text
    r = await client.post("/v1/models/m/fit", json=fit_body(features, ["x" * 201] + labels[1:], contract))
    assert r.status_code == 422 and "CLASSIFIER_MAX_LABEL_CHARS" in r.json()["detail"]
    assert (await fit(client, "m")).status_code == 201
    for url in ("/v1/models/m/predict?version=1.0", "/v1/models/m/predict?version=1e0"):
        r = await client.post(url, json={"features": tensor_json(features[:1])})
        assert r.status_code == 422 and "whole number" in r.json()["detail"]
    assert (await client.get("/v1/models/m/versions/1.0")).status_code == 422
    assert (await client.get("/v2/models/m/versions/1.0")).status_code == 422
    assert (await client.post("/v1/models/m/predict?version=1", json={"features": tensor_json(features[:1])})).status_code == 200


def test_leftover_claims_never_reach_the_listing(tmp_path):
    store = ModelStore(tmp_path)
    store.save("m", {}, _write("x"))
    assert store.names() == (["m"], [])
    shutil.rmtree(tmp_path / "m")
    assert store.names() == ([], []) and store.highest_claimed("m") == 1


def test_a_worker_ends_by_itself_when_the_service_is_gone():
    """A killed service closes its end of the worker's lifeline: the worker exits, even mid-fit."""
    from classifier_service.fitting import _Worker

    worker = _Worker(torch_threads=1)
    try:
        assert worker.process.is_alive()
        worker._lifeline.close()  # what the kernel does for a service that dies
        worker.process.join(60)
        assert not worker.process.is_alive()
    finally:
        worker.stop()
