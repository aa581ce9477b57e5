"""Fits run off the event loop: predictions keep being served while one runs."""

from __future__ import annotations

import asyncio
import threading

import anyio

from classifier_service.runtime import ClassifierRuntime
from tests.classifier_service.synthetic import classifier_client, features_for, fit, tensor_json


async def test_predictions_are_served_while_a_fit_runs(client, monkeypatch):
    assert (await fit(client, "fast")).status_code == 201
    started, release = threading.Event(), threading.Event()
    train = ClassifierRuntime._train

    def slow_train(self, job):
        started.set()
        assert release.wait(30)
        return train(self, job)

    monkeypatch.setattr(ClassifierRuntime, "_train", slow_train)
    fitting = asyncio.create_task(fit(client, "slow"))
    assert await anyio.to_thread.run_sync(started.wait, 30)
    features, _, _ = features_for("embedding")
    for _ in range(3):
        r = await client.post("/v1/models/fast/predict", json={"features": tensor_json(features)})
        assert r.status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert not fitting.done()  # the fit is still training while all of that was answered
    release.set()
    assert (await fitting).status_code == 201


async def test_too_many_waiting_fits_get_429(store, monkeypatch):
    started, release = threading.Event(), threading.Event()
    train = ClassifierRuntime._train

    def slow_train(self, job):
        started.set()
        release.wait(30)
        return train(self, job)

    monkeypatch.setattr(ClassifierRuntime, "_train", slow_train)
    async with classifier_client(store, max_pending_fits=1) as client:
        first = asyncio.create_task(fit(client, "a"))
        assert await anyio.to_thread.run_sync(started.wait, 30)
        r = await fit(client, "b")
        assert r.status_code == 429 and r.headers["retry-after"] == "5"
        release.set()
        assert (await first).status_code == 201


async def test_a_fit_that_stops_at_max_iter_says_so(client):
    r = await fit(client, "m", estimator="logistic_regression", params={"max_iter": 1})
    assert r.status_code == 201  # the ConvergenceWarning is recorded, not raised (pytest turns warnings into errors)
    assert any("max_iter" in note or "converge" in note for note in r.json()["metrics"]["convergence_warnings"])
