"""Two classifier processes on one store (a folder, or a prefix in a bucket), for the store's crash,
fault and S3 tests; and the big fit whose save takes a while (to kill a process during it)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.classifier_service.synthetic import features_for, fit_body, tensor_json
from tests.processes import ServiceProcess

PROBE = tensor_json(features_for("embedding", seed=1)[0][:6])
# Big enough that its save takes a while (an 18 MB skops file), small enough to train in a second.
BIG_ROWS, BIG_DIM = 300, 64
BIG_PARAMS = {"hidden_layer_sizes": [1024, 1024], "max_iter": 3}


def big_fit_body() -> dict:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BIG_ROWS, BIG_DIM)).astype(np.float32)
    labels = ["billing", "refund", "shipping"] * (BIG_ROWS // 3)
    _, _, contract = features_for("embedding")
    contract = contract.model_copy(update={"dim": BIG_DIM})
    return fit_body(features, labels, contract, estimator="mlp", params=BIG_PARAMS)


def stored_versions(listing: dict) -> Iterator[tuple[str, str, list]]:
    """For each version in a classifier's ``GET /v1/models``: ``name/version``, its predict path, and the
    probe to send it (the big model's on its own width). Nothing may have been skipped."""
    assert listing["skipped"] == [], listing["skipped"]
    for model in listing["models"]:
        probe = PROBE if model["latest"]["input_contract"]["dim"] != BIG_DIM else [[0.5] * BIG_DIM] * 2
        for version in model["versions"]:
            yield f"{model['name']}/{version}", f"/v1/models/{model['name']}/predict?version={version}", probe


def http_fit(http: httpx.Client, service: ServiceProcess, name: str, **fields) -> httpx.Response:
    features, labels, contract = features_for("embedding")
    return http.post(f"{service.url}/v1/models/{name}/fit", json=fit_body(features, labels, contract, **fields))


@dataclass
class Replicas:
    a: ServiceProcess
    b: ServiceProcess
    http: httpx.Client
    store: Path | None = None  # the folder both use, if they share one
    prefix: str = ""  # or their prefix in the bucket

    def fit(self, service: ServiceProcess, name: str, **fields) -> httpx.Response:
        return http_fit(self.http, service, name, **fields)

    def race(self, name: str) -> list[httpx.Response]:
        """Three fits of ``name`` (one per estimator) through each process at once: all 201, versions 1 to 6."""
        estimators = ["logistic_regression", "gaussian_nb", "mlp"]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(self.fit, s, name, estimator=e) for s in (self.a, self.b) for e in estimators]
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses if r.status_code != 201]
        assert sorted(r.json()["version"] for r in responses) == [1, 2, 3, 4, 5, 6]
        return responses

    def predictions(self, service: ServiceProcess) -> dict[str, dict]:
        """Every stored version's answer to the probe."""
        out = {}
        for key, path, probe in stored_versions(self.http.get(f"{service.url}/v1/models").json()):
            r = self.http.post(service.url + path, json={"features": probe})
            assert r.status_code == 200, r.text
            out[key] = r.json()
        return out


@contextmanager
def two_classifiers(env_a: dict[str, str], env_b: dict[str, str], var: Path, **where) -> Iterator[Replicas]:
    """Two classifier processes started side by side (logs ``var/a.log``, ``var/b.log``); killed at the end,
    with whatever a test started in their place."""
    a = ServiceProcess("classifier_service", env_a, log=var / "a.log")
    b = ServiceProcess("classifier_service", env_b, log=var / "b.log")
    r = Replicas(a, b, httpx.Client(timeout=120), **where)
    try:
        a.start(wait_ready=False)
        b.start(wait_ready=False)
        a.wait_ready()
        b.wait_ready()
        yield r
    finally:
        r.http.close()
        for service in (r.a, r.b, a, b):
            service.stop(kill=True)
