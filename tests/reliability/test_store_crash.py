"""The model store under crashes and sharing, with real classifier processes on one store:

- two processes: a version fitted through one is served by the other; concurrent fits of one name
  through both get distinct versions, all complete;
- SIGKILL during a fit, while the version's files are written, and between its manifest and its
  rename: every earlier version still loads and predicts the same, the interrupted one is absent
  or complete, and the leftovers are never served (and are cleaned up at a later start)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.classifier_service.synthetic import classifier_client
from tests.processes import ServiceProcess
from tests.reliability.replicas import PROBE, Replicas, big_fit_body, stored_versions, two_classifiers

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[Replicas]:
    var = tmp_path_factory.mktemp("store-crash")
    env = {"CLASSIFIER_STORE": str(var / "models"), "CLASSIFIER_TORCH_THREADS": "1"}
    with two_classifiers(env, env, var, store=var / "models") as pair:
        yield pair


def test_a_version_fitted_through_one_process_is_served_by_the_other(pair):
    fitted = pair.fit(pair.a, "shared")
    assert fitted.status_code == 201 and fitted.json()["version"] == 1
    through_a = pair.http.post(f"{pair.a.url}/v1/models/shared/predict", json={"features": PROBE}).json()
    through_b = pair.http.post(f"{pair.b.url}/v1/models/shared/predict", json={"features": PROBE}).json()
    assert through_b == through_a and through_b["version"] == 1


def test_concurrent_fits_of_one_name_through_both_never_corrupt_the_store(pair):
    responses = pair.race("race")
    versions = sorted(r.json()["version"] for r in responses)
    for service in (pair.a, pair.b):
        listing = pair.http.get(f"{service.url}/v1/models/race").json()
        assert [v["version"] for v in listing["versions"]] == versions
        # each number holds the estimator the fit that got it asked for
        recorded = {v["version"]: v["estimator"] for v in listing["versions"]}
        assert recorded == {r.json()["version"]: r.json()["estimator"] for r in responses}
    assert pair.predictions(pair.a) == pair.predictions(pair.b)


def _temp_dirs(folder: Path) -> list[Path]:
    return list(folder.glob(".tmp-*")) if folder.is_dir() else []


def _kill_when(pair: Replicas, victim: ServiceProcess, moment: str) -> None:
    """Sends a big fit to ``victim`` and SIGKILLs it at ``moment``: ``training`` (before anything is
    written), ``writing`` (its temporary version directory exists), ``renaming`` (its manifest is written)."""
    folder = pair.store / "big"
    before = set(_temp_dirs(folder))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(pair.http.post, f"{victim.url}/v1/models/big/fit", json=big_fit_body())
        deadline = time.monotonic() + 60
        if moment == "training":
            time.sleep(0.4)
        while moment != "training" and time.monotonic() < deadline and not pending.done():
            fresh = [t for t in _temp_dirs(folder) if t not in before]
            if fresh and (moment == "writing" or (fresh[0] / "manifest.json").exists()):
                break
            time.sleep(0.0005)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        try:
            outcome = pending.result().status_code
        except httpx.TransportError:
            outcome = None  # killed before it answered
    print(f"killed during {moment}: fit answered {outcome}; big versions on disk: "
          f"{sorted(p.name for p in folder.iterdir() if not p.name.startswith('.')) if folder.is_dir() else []}")


async def _restarted(store: Path, **settings) -> dict[str, dict]:
    """What a classifier started on ``store`` now serves: every version's answer to the probe. (It
    loads the store exactly as a process start does, in process to save a start-up per kill.)"""
    out = {}
    async with classifier_client(store, **settings) as client:
        for key, path, probe in stored_versions((await client.get("/v1/models")).json()):
            r = await client.post(path, json={"features": probe})
            assert r.status_code == 200, r.text
            out[key] = r.json()
    return out


def _without_big(predictions: dict[str, dict]) -> dict[str, dict]:
    return {k: v for k, v in predictions.items() if not k.startswith("big/")}


def test_a_classifier_killed_during_a_fit_or_a_save_loses_nothing(pair, tmp_path):
    assert pair.fit(pair.a, "keep").status_code == 201
    assert pair.fit(pair.a, "keep", estimator="gaussian_nb").status_code == 201
    before = pair.predictions(pair.b)
    # A third process to kill last, started now so that its start overlaps the first rounds.
    spare = ServiceProcess("classifier_service", pair.a.env, log=tmp_path / "spare.log").start(wait_ready=False)
    try:
        for victim, moment, survivor in ((pair.a, "training", pair.b), (pair.b, "writing", spare),
                                         (spare, "renaming", None)):
            victim.wait_ready()
            _kill_when(pair, victim, moment)
            # A process sharing the store, and one started after the kill, both serve every earlier
            # version as before; the interrupted one is absent or complete (whatever version of "big"
            # is listed loads and predicts); no temporary directory is ever listed or served.
            restarted = asyncio.run(_restarted(pair.store))
            assert _without_big(restarted) == before
            if survivor is not None:
                survivor.wait_ready()
                assert pair.predictions(survivor) == restarted
    finally:
        spare.stop(kill=True)
    # A later start clears what the kills left behind; nothing else changes.
    assert asyncio.run(_restarted(pair.store, stale_temp_seconds=0)) == restarted
    assert _temp_dirs(pair.store / "big") == []
