"""The store's faults with real classifier processes (issue 15):

- two classifiers on one store: DELETE through one, fit through the other: numbers go on (never reused);
- DELETE through one classifier while the other saves a version of that name: the fit is a 409
  "deleted meanwhile", never a 500;
- a full and a read-only store (a private mount namespace: tmpfs, read-only bind mount): fit and
  DELETE answer 507 naming the store and the cause; what is stored keeps being served."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.classifier_service.synthetic import classifier_client, features_for, fit, tensor_json
from tests.processes import ROOT, ServiceProcess
from tests.reliability.replicas import big_fit_body, http_fit, two_classifiers

pytestmark = pytest.mark.integration

PROBE = tensor_json(features_for("embedding", seed=1)[0][:4])


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    var = tmp_path_factory.mktemp("store-faults")
    env = {"CLASSIFIER_STORE": str(var / "models"), "CLASSIFIER_TORCH_THREADS": "1"}
    with two_classifiers(env, env, var) as r:
        yield r.a, r.b, r.http, var / "models"


def test_numbers_go_on_after_a_delete_through_another_classifier(two):
    a, b, http, _ = two
    assert http_fit(http, a, "again").json()["version"] == 1
    assert http.delete(f"{b.url}/v1/models/again").status_code == 204
    assert http_fit(http, a, "again").json()["version"] == 2  # not 1: a pinned v1 never means another model
    assert http_fit(http, b, "again").json()["version"] == 3
    assert http.get(f"{a.url}/v1/models/again/versions/1").status_code == 404


def test_delete_through_one_while_the_other_saves_is_a_409(two):
    a, b, http, store = two
    answers = []
    for _ in range(3):
        folder = store / "big"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(http.post, f"{a.url}/v1/models/big/fit", json=big_fit_body())
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not pending.done():
                if folder.is_dir() and any(p.name.startswith(".tmp-") for p in folder.iterdir()):
                    break  # a's save is writing its temporary version directory
                time.sleep(0.0005)
            http.delete(f"{b.url}/v1/models/big")
            r = pending.result()
        answers.append(r.status_code)
        assert r.status_code in (201, 409), r.text
        if r.status_code == 409:
            assert "deleted meanwhile" in r.json()["detail"]
            break
    assert 409 in answers, answers
    assert http.get(f"{a.url}/v1/models/big").status_code == 404
    assert http.get(f"{a.url}/v1/models").json()["skipped"] == []


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True).returncode == 0


def _start_mounted(service: ServiceProcess, setup: str) -> ServiceProcess:
    """``service`` in a private mount namespace, after ``setup`` (shell) mounted its store."""
    env = {**os.environ, **service.env, "CLASSIFIER_HOST": "127.0.0.1", "CLASSIFIER_PORT": str(service.port)}
    with open(service.log, "ab") as out:
        service.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", f"{setup} && exec {sys.executable} -m classifier_service"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    service.wait_ready()
    return service


async def _fit_in_process(store: Path) -> None:
    async with classifier_client(store) as client:
        assert (await fit(client, "kept")).status_code == 201


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces (unshare -m)")
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_store_is_a_507_and_nothing_is_lost(tmp_path, fault):
    store = tmp_path / "models"
    store.mkdir()
    env = {"CLASSIFIER_STORE": str(store), "CLASSIFIER_TORCH_THREADS": "1"}
    if fault == "full":  # room for a small model, not for a big one
        setup, cause, big = f"mount -t tmpfs -o size=4m tmpfs {store}", "full (ENOSPC)", True
    else:
        setup, cause, big = f"mount --bind {store} {store} && mount -o remount,bind,ro {store}", "read-only (EROFS)", False
    with httpx.Client(timeout=120) as http:
        if not big:  # a version written while the store was writable (in process: saves a start)
            asyncio.run(_fit_in_process(store))
        service = ServiceProcess("classifier_service", env, log=tmp_path / "service.log")
        try:
            _start_mounted(service, setup)
            if big:
                assert http_fit(http, service, "kept").status_code == 201
            before = http.post(f"{service.url}/v1/models/kept/predict", json={"features": PROBE}).json()
            r = http.post(f"{service.url}/v1/models/kept/fit", json=big_fit_body()) if big else http_fit(http, service, "kept")
            assert r.status_code == 507, r.text
            assert cause in r.json()["detail"] and str(store) in r.json()["detail"]
            if not big:
                r = http.delete(f"{service.url}/v1/models/kept")
                assert r.status_code == 507 and cause in r.json()["detail"], r.text
            listing = http.get(f"{service.url}/v1/models").json()
            assert [(m["name"], m["versions"]) for m in listing["models"]] == [("kept", [1])] and listing["skipped"] == []
            assert http.post(f"{service.url}/v1/models/kept/predict", json={"features": PROBE}).json() == before
        finally:
            service.stop(kill=True)
