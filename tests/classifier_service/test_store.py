"""Persistence: models survive a restart, writes are atomic, foreign or damaged entries are skipped
with a report, and two processes can share one store."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from classifier_service.estimator_types import SklearnEstimator
from classifier_service.settings import ClassifierSettings
from classifier_service.directory_store import ModelStore
from classifier_service.store import StoreEntryError, VersionStore, load_skops, open_store
from services.errors import Conflict
from tests.classifier_service.synthetic import classifier_client, features_for, fit, tensor_json

FAST_HEAD = {"max_epochs": 20}


async def _predict(client, name: str, kind: str, version: int | None = None) -> dict:
    features, _, _ = features_for(kind, seed=1)
    url = f"/v1/models/{name}/predict" + (f"?version={version}" if version else "")
    r = await client.post(url, json={"features": tensor_json(features)})
    assert r.status_code == 200, r.text
    return r.json()


async def _fit_three(client) -> dict[str, dict]:
    assert (await fit(client, "vectors")).status_code == 201
    assert (await fit(client, "vectors", estimator="mlp")).status_code == 201
    assert (await fit(client, "heads", "tokens", estimator="attention_pooling", params=FAST_HEAD)).status_code == 201
    assert (await fit(client, "dists", "probabilities")).status_code == 201
    return {
        "vectors": await _predict(client, "vectors", "embedding"),
        "vectors-1": await _predict(client, "vectors", "embedding", version=1),
        "heads": await _predict(client, "heads", "tokens"),
        "dists": await _predict(client, "dists", "probabilities"),
    }


def _rewrite_artifact(folder: Path, filename: str, content: bytes) -> None:
    """Replaces an artifact and records its new hash: only the loader's own checks can refuse it."""
    (folder / filename).write_bytes(content)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][filename] = hashlib.sha256(content).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


async def test_models_survive_a_restart(store):
    async with classifier_client(store) as client:
        before = await _fit_three(client)
        records = (await client.get("/v1/models")).json()
    assert sorted(p.name for p in (store / "heads" / "1").iterdir()) == ["head.json", "head.safetensors", "manifest.json", "ood.safetensors"]
    assert sorted(p.name for p in (store / "vectors" / "2").iterdir()) == ["manifest.json", "model.skops", "ood.safetensors"]
    async with classifier_client(store) as client:
        assert (await client.get("/v1/models")).json() == records
        after = {
            "vectors": await _predict(client, "vectors", "embedding"),
            "vectors-1": await _predict(client, "vectors", "embedding", version=1),
            "heads": await _predict(client, "heads", "tokens"),
            "dists": await _predict(client, "dists", "probabilities"),
        }
    assert after == before  # bit for bit: skops and safetensors round-trip exactly


async def test_damaged_and_foreign_entries_are_skipped_and_reported(store, caplog):
    async with classifier_client(store) as client:
        for _ in range(4):
            await fit(client, "m")
        expected = await _predict(client, "m", "embedding", version=1)
    # version 2: an artifact damaged after it was written (its hash no longer matches)
    with open(store / "m" / "2" / "model.skops", "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 16)
    # version 3: a skops file holding a type outside the allow-list (hash updated to match)
    evil = skops.io.dumps(FunctionTransformer(func=os.system))
    _rewrite_artifact(store / "m" / "3", "model.skops", evil)
    # version 4: a trusted type, but not the estimator the manifest names
    _rewrite_artifact(store / "m" / "4", "model.skops", skops.io.dumps(make_pipeline(LogisticRegression())))
    # version 5: no manifest; version 6: a manifest that is not JSON
    (store / "m" / "5").mkdir()
    (store / "m" / "5" / "model.skops").write_bytes(b"PK")
    (store / "m" / "6").mkdir()
    (store / "m" / "6" / "manifest.json").write_text("{oops")
    # foreign things beside the models
    (store / "notes.txt").write_text("hello")
    (store / "Bad Name").mkdir()
    (store / "m" / "model.pkl").write_bytes(b"\x80\x04.")

    caplog.set_level("WARNING", logger="seam.classifier")
    async with classifier_client(store) as client:
        ready = (await client.get("/readyz")).json()
        listing = (await client.get("/v1/models")).json()
        assert [(m["name"], m["versions"]) for m in listing["models"]] == [("m", [1])]
        # every damaged version is listed with why, wherever versions are listed
        assert [d["version"] for d in listing["models"][0]["damaged"]] == [2, 3, 4, 5, 6]
        detail = (await client.get("/v1/models/m")).json()
        assert detail["latest"] is None and [d["version"] for d in detail["damaged"]] == [2, 3, 4, 5, 6]
        # the latest (6) is damaged: refused, naming it; version 1 is never served in its place
        r = await client.post("/v1/models/m/predict", json={"features": [[0.0] * 8]})
        assert r.status_code == 409 and "latest version of model 'm', version 6, is damaged" in r.json()["detail"]
        assert (await client.get("/v1/models/m/latest")).status_code == 409
        # a damaged version asked for by number says so (not "no version 3")
        r = await client.post("/v1/models/m/predict?version=3", json={"features": [[0.0] * 8]})
        assert r.status_code == 409 and "Version 3 of model 'm' is damaged" in r.json()["detail"]
        assert "allow-list" in r.json()["detail"] and r.json()["reason"]
        assert (await client.get("/v1/models/m/versions/2")).status_code == 409
        assert (await client.post("/v1/models/m/predict?version=7", json={"features": [[0.0] * 8]})).status_code == 404
        assert await _predict(client, "m", "embedding", version=1) == expected
    reasons = {s["path"]: s["reason"] for s in listing["skipped"]}
    assert ready["skipped"] == listing["skipped"]
    assert set(reasons) == {"m/2", "m/3", "m/4", "m/5", "m/6", "m/model.pkl", "notes.txt", "Bad Name"}
    assert "SHA-256" in reasons["m/2"]
    assert "allow-list" in reasons["m/3"] and "system" in reasons["m/3"]
    assert "Pipeline" in reasons["m/4"]
    assert "no manifest.json" in reasons["m/5"]
    assert "unreadable manifest.json" in reasons["m/6"]
    assert "not a model directory" in reasons["notes.txt"]
    logged = caplog.text
    assert "m/3 skipped" in logged and "notes.txt skipped" in logged


def test_skops_loader_refuses_types_outside_the_allow_list(tmp_path):
    path = tmp_path / "model.skops"
    skops.io.dump(FunctionTransformer(func=os.system), path)
    with pytest.raises(StoreEntryError, match="allow-list"):
        load_skops(path, allowed=frozenset(), expected=FunctionTransformer)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(StoreEntryError, match="not a readable skops file"):
        load_skops(path, allowed=frozenset(), expected=LogisticRegression)


async def test_a_failed_save_leaves_no_half_version(store, monkeypatch):
    async with classifier_client(store, raise_app_exceptions=False) as client:
        await fit(client, "m")
        before = await _predict(client, "m", "embedding")

        def disk_full(self, model, folder: Path) -> None:
            (folder / "model.skops").write_bytes(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(SklearnEstimator, "save", disk_full)
        r = await fit(client, "m")
        # 507 naming the store and the cause, not 500
        assert r.status_code == 507 and r.headers["content-type"] == "application/problem+json"
        assert "ENOSPC" in r.json()["detail"] and "CLASSIFIER_STORE" in r.json()["detail"]
        assert sorted(p.name for p in (store / "m").iterdir()) == ["1"]  # no version 2, no temporary left
        assert (await client.get("/v1/models/m")).json()["latest"]["version"] == 1
        assert await _predict(client, "m", "embedding") == before
    monkeypatch.undo()
    async with classifier_client(store) as client:
        assert (await client.get("/v1/models")).json()["skipped"] == []
        assert await _predict(client, "m", "embedding") == before
        assert (await fit(client, "m")).json()["version"] == 2


async def test_a_crash_mid_save_is_invisible_and_cleaned_up(store):
    async with classifier_client(store) as client:
        await fit(client, "m")
    # what a process killed while writing leaves: a temporary directory without its manifest
    leftover = store / "m" / ".tmp-0123abcd"
    leftover.mkdir()
    (leftover / "model.skops").write_bytes(b"PK\x03\x04 half")
    async with classifier_client(store) as client:  # recent: may belong to a live writer, kept
        listing = (await client.get("/v1/models")).json()
        assert listing["models"][0]["versions"] == [1] and listing["skipped"] == []
    assert leftover.exists()
    async with classifier_client(store, stale_temp_seconds=0) as client:
        assert (await client.get("/v1/models")).json()["skipped"] == []
    assert not leftover.exists()


def test_store_save_is_atomic_and_numbers_never_collide(tmp_path):
    """Two writers (threads here, processes in production) share one store: every save gets its own
    number and every version is complete."""
    stores = [ModelStore(tmp_path), ModelStore(tmp_path)]

    def writer(store: ModelStore, tag: str) -> None:
        for i in range(10):
            store.save("m", {"tag": tag, "i": i}, lambda folder: (folder / "a.bin").write_bytes(f"{tag}{i}".encode()))

    threads = [threading.Thread(target=writer, args=(s, t)) for s, t in zip(stores, "ab")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers, foreign = stores[0].versions("m")
    assert numbers == list(range(1, 21)) and foreign == []
    saved = sorted((stores[0].read("m", n).record["tag"], stores[0].read("m", n).record["i"]) for n in numbers)
    assert saved == sorted((t, i) for t in "ab" for i in range(10))

    def broken(folder: Path) -> None:
        (folder / "a.bin").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        stores[0].save("m", {}, broken)
    assert stores[0].versions("m")[0] == numbers and [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")] == []


async def test_two_services_share_one_store(store):
    async with classifier_client(store) as a, classifier_client(store) as b:
        assert (await fit(a, "shared")).json()["version"] == 1
        # b never fitted it: it finds the version on disk instead of answering 404
        assert (await _predict(b, "shared", "embedding"))["version"] == 1
        assert (await fit(b, "shared", estimator="gaussian_nb")).json()["version"] == 2
        assert (await _predict(a, "shared", "embedding"))["version"] == 2  # latest follows the disk
        assert (await a.get("/v1/models/shared")).json()["latest"]["estimator"] == "gaussian_nb"
        assert (await b.delete("/v1/models/shared")).status_code == 204
        features, _, _ = features_for("embedding")
        r = await a.post("/v1/models/shared/predict", json={"features": tensor_json(features)})
        assert r.status_code == 404
        assert (await a.get("/v1/models")).json()["models"] == []


def test_store_refuses_unchecked_names(tmp_path):
    store = ModelStore(tmp_path)
    for name in ("../x", "Bad Name", ""):
        with pytest.raises(Exception, match="invalid model name"):
            store.save(name, {}, lambda folder: None)
    assert list(tmp_path.iterdir()) == []
    assert np.all(np.array(store.names()[0]) == np.array([]))


async def test_the_skipped_report_follows_the_disk(store):
    async with classifier_client(store) as client:
        await fit(client, "m")
        await fit(client, "m")
    (store / "m" / "2" / "model.skops").write_bytes(b"junk")
    (store / "junk.txt").write_text("not a model")
    async with classifier_client(store) as client:
        assert [s["path"] for s in (await client.get("/v1/models")).json()["skipped"]] == ["junk.txt", "m/2"]
        # someone removes the broken version 2, another process fits a new version (3: numbers are
        # never reused), and the junk goes away
        shutil.rmtree(store / "m" / "2")
        (store / "junk.txt").unlink()
        async with classifier_client(store) as other:
            assert (await fit(other, "m", estimator="gaussian_nb")).json()["version"] == 3
        listing = (await client.get("/v1/models")).json()
        assert listing["skipped"] == []
        assert listing["models"][0]["latest"]["estimator"] == "gaussian_nb"


# --- one store interface, two implementations: the same suite against a directory and S3 --------------


@dataclass
class Backend:
    kind: str
    url: Path | str  # what CLASSIFIER_STORE says
    cache: Path

    def settings(self, **change) -> ClassifierSettings:
        return ClassifierSettings(store=self.url, store_cache=self.cache, **change)

    def open(self, **change) -> VersionStore:
        store = open_store(self.settings(**change))
        store.prepare()
        return store

    def damage(self, name: str, version: int, filename: str) -> None:
        """Overwrites one artifact in place, keeping the manifest's old hash."""
        if self.kind == "local":
            (Path(self.url) / name / str(version) / filename).write_bytes(b"damaged")
        else:
            store = self.open()
            store.client.put_object(Bucket=store.bucket, Key=store._key(name, str(version), filename), Body=b"damaged")


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return Backend("local", tmp_path / "models", tmp_path / "cache")
    return Backend("s3", request.getfixturevalue("s3_store"), tmp_path / "cache")


def _writer(content: bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / "model.skops").write_bytes(content)
    return write


def test_backend_saves_whole_versions_and_reads_them_back(backend):
    store = backend.open()
    assert store.names()[0] == [] or backend.kind == "local"
    assert [store.save("m", {"n": i}, _writer(b"v%d" % i)) for i in (1, 2)] == [1, 2]
    assert store.versions("m")[0] == [1, 2] and "m" in store.names()[0]
    stored = store.read("m", 2)
    assert stored.record == {"n": 2} and (stored.folder / "model.skops").read_bytes() == b"v2"
    assert store.identity("m", 1) != store.identity("m", 2)
    other = backend.open(store_list_ttl_s=0)  # another replica on the same store
    assert other.versions("m")[0] == [1, 2] and other.read("m", 1).record == {"n": 1}


def test_backend_numbers_never_collide_under_racing_saves(backend):
    stores = [backend.open() for _ in range(4)]
    numbers: list[int] = []
    lock = threading.Lock()

    def save(i: int) -> None:
        number = stores[i % 4].save("race", {"i": i}, _writer(b"%d" % i))
        with lock:
            numbers.append(number)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 9))
    reader = backend.open(store_list_ttl_s=0)
    assert reader.versions("race")[0] == list(range(1, 9))
    assert sorted(reader.read("race", n).record["i"] for n in range(1, 9)) == list(range(8))


def test_backend_delete_hides_every_version_and_numbers_are_never_reused(backend):
    store = backend.open(store_list_ttl_s=0)
    for i in range(3):
        store.save("m", {"i": i}, _writer(b"x"))
    assert store.delete("m") is True
    assert store.versions("m")[0] == [] and "m" not in [n for n in store.names()[0] if store.versions(n)[0]]
    assert store.delete("m") is False
    assert store.highest_claimed("m") == 3
    assert store.save("m", {"i": 9}, _writer(b"y")) == 4  # never 1 again
    assert store.versions("m")[0] == [4] and store.read("m", 4).record == {"i": 9}


def test_backend_a_failed_save_leaves_nothing_visible(backend):
    store = backend.open(store_list_ttl_s=0)
    store.save("m", {"i": 1}, _writer(b"one"))

    def half_then_fail(folder: Path) -> None:
        (folder / "model.skops").write_bytes(b"half")
        raise RuntimeError("the fit's writer failed")

    with pytest.raises(RuntimeError):
        store.save("m", {"i": 2}, half_then_fail)
    assert store.versions("m")[0] == [1] and store.read("m", 1).record == {"i": 1}
    assert store.save("m", {"i": 3}, _writer(b"three")) in (2, 3)  # a gap is allowed, a reuse is not


def test_backend_a_damaged_artifact_is_refused_on_read(backend):
    store = backend.open(store_list_ttl_s=0)
    store.save("m", {"i": 1}, _writer(b"good"))
    backend.damage("m", 1, "model.skops")
    # (a replica's cached copy stays the verified bytes the manifest names; a new replica fetches anew)
    shutil.rmtree(backend.cache, ignore_errors=True)
    fresh = backend.open(store_list_ttl_s=0)
    with pytest.raises(StoreEntryError, match="SHA-256"):
        fresh.read("m", 1)


def test_backend_a_delete_during_a_save_is_a_conflict_and_nothing_reappears(backend):
    store, other = backend.open(store_list_ttl_s=0), backend.open(store_list_ttl_s=0)
    store.save("m", {"i": 1}, _writer(b"one"))

    def deleted_meanwhile(folder: Path) -> None:
        (folder / "model.skops").write_bytes(b"two")
        assert other.delete("m")

    with pytest.raises(Conflict, match="deleted meanwhile"):
        store.save("m", {"i": 2}, deleted_meanwhile)
    assert store.versions("m")[0] == [] and other.versions("m")[0] == []


async def test_backend_models_survive_a_restart_through_the_service(backend):
    settings = {"store_cache": backend.cache}
    async with classifier_client(backend.url, **settings) as client:
        assert (await fit(client, "vectors")).status_code == 201
        assert (await fit(client, "heads", "tokens", estimator="attention_pooling", params=FAST_HEAD)).status_code == 201
        before = [await _predict(client, "vectors", "embedding"), await _predict(client, "heads", "tokens")]
        listing = (await client.get("/v1/models")).json()
    shutil.rmtree(backend.cache, ignore_errors=True)  # an S3 replica starts with an empty cache
    async with classifier_client(backend.url, **settings) as client:
        assert (await client.get("/v1/models")).json() == listing
        assert [await _predict(client, "vectors", "embedding"), await _predict(client, "heads", "tokens")] == before


def test_the_object_store_cache_is_bounded(s3_store, tmp_path):
    backend = Backend("s3", s3_store, tmp_path / "cache")
    writer = backend.open()
    for i in range(6):
        writer.save("big", {"i": i}, _writer(os.urandom(4096)))
    shutil.rmtree(tmp_path / "cache")
    reader = backend.open(store_cache_bytes=10_000, store_list_ttl_s=0)
    for version in range(1, 7):
        assert (reader.read("big", version).folder / "model.skops").stat().st_size == 4096
    cached = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
    assert 4096 <= cached <= 10_000


def test_an_object_store_url_is_checked_at_start():
    with pytest.raises(ValueError, match="bucket is missing"):
        ClassifierSettings(store="s3:///prefix")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        ClassifierSettings(store="gs://bucket/prefix")
    assert ClassifierSettings(store="s3://b/p/").store == "s3://b/p"
    assert ClassifierSettings(store="var/models").store == Path("var/models")


def test_backend_aliases_move_by_compare_and_swap_and_every_replica_sees_them(backend):
    from classifier_service.aliases import AliasMoved, AliasNotFound, open_aliases

    one, two = open_aliases(backend.open()), open_aliases(backend.open())  # two replicas on one store
    assert one.get("m") == {}
    assert one.set("m", "production", 1) == {"production": 1}
    assert two.get("m") == {"production": 1}
    assert two.set("m", "production", 2, expected=1) == {"production": 2}
    with pytest.raises(AliasMoved):
        one.set("m", "production", 3, expected=1)  # a stale expectation loses
    assert one.set("m", "canary", 3) == {"canary": 3, "production": 2}
    assert two.delete("m", "canary") == {"production": 2}
    with pytest.raises(AliasNotFound):
        one.delete("m", "canary")
    one.drop("m")
    assert two.get("m") == {}
