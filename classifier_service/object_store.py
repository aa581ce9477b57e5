"""The model store on an S3-compatible object store (``CLASSIFIER_STORE=s3://bucket/prefix``).

Layout under ``prefix``::

    <name>/<version>/<artifact>        model.skops, or head.safetensors and head.json
    <name>/<version>/manifest.json     the version record and every artifact's SHA-256; written last
    .counters/<name>                   {"claimed": N, "deleted_through": D}

There is no atomic rename on an object store, so the guarantees of the directory store
(:class:`classifier_service.store.ModelStore`) come from conditional writes instead:

- a version is visible only once its manifest exists, and the manifest is written after every
  artifact, create-if-absent (``If-None-Match: *``): a crash mid-save leaves artifacts nobody reads
  (removed at the next start once older than ``CLASSIFIER_STALE_TEMP_SECONDS``);
- numbers are claimed by a compare-and-swap of the model's counter (``If-Match: <etag>``, or
  ``If-None-Match: *`` for its first): two replicas never get one number, and the counter outlives
  DELETE, so a number is never reused;
- DELETE is one compare-and-swap too: ``deleted_through`` rises to the highest claim, which hides
  every version at or below it at once (readers see the whole model or none of it); the objects are
  removed afterwards. A save whose number was claimed before a DELETE sees it after writing its
  manifest, removes its version and answers 409, as on a directory.

Artifacts read are copied to a local cache (``CLASSIFIER_STORE_CACHE``), at most
``CLASSIFIER_STORE_CACHE_BYTES`` (least recently used removed first), checked against their SHA-256
on every read. The bucket's calls, and what their errors mean, are :mod:`classifier_service.bucket`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from classifier_service.bucket import Bucket, PreconditionFailed
from classifier_service.store import (
    MANIFEST_FILE, MAX_MANIFEST_BYTES, Skipped, StoredVersion, StoreEntryError, check_manifest, deleted_meanwhile,
    manifest_bytes, sha256_of, version_number,
)
from services.contracts import is_valid_model_name
from services.errors import StoreUnavailable, StoreUnreachable

log = logging.getLogger("seam.classifier.store")

COUNTERS = ".counters"


class ObjectModelStore(Bucket):
    """Versions in an S3 bucket; see the module's docstring for how each guarantee is kept."""

    def __init__(self, url: str, client: Any, *, cache: Path, cache_bytes: int, list_ttl_s: float) -> None:
        super().__init__(url, client)
        self.cache = Path(cache)
        self.cache_bytes = cache_bytes
        self.list_ttl_s = list_ttl_s
        self._listings: dict[str, tuple[float, dict[int, dict[str, tuple[str, int, float]]], list[Skipped], int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> ObjectModelStore:
        # AWS_ENDPOINT_URL and the credentials are read by boto3 itself; AWS_REGION as other SDKs do.
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        config = Config(
            connect_timeout=settings.store_timeout_s, read_timeout=settings.store_timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        client = boto3.session.Session().client("s3", region_name=region, config=config)
        return cls(settings.store, client, cache=settings.store_cache, cache_bytes=settings.store_cache_bytes,
                   list_ttl_s=settings.store_list_ttl_s)


    @staticmethod
    def _counter_state(raw: Any) -> dict[str, int]:
        if raw is None:
            return {"claimed": 0, "deleted_through": 0}
        return {"claimed": int(raw["claimed"]), "deleted_through": int(raw["deleted_through"])}

    def _counter(self, name: str) -> tuple[dict[str, int], str | None]:
        raw, etag = self.read_json(f"read the version counter of {name!r}", self._key(COUNTERS, name))
        return self._counter_state(raw), etag

    def _swap_counter(self, name: str, change: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
        return self.swap_json(f"update the version counter of {name!r}", self._key(COUNTERS, name),
                              lambda raw: change(self._counter_state(raw)))

    def highest_claimed(self, name: str) -> int:
        return self._counter(self._check(name))[0]["claimed"]

    def claim_version(self, name: str, *, at_least: int = 1) -> int:
        state = self._swap_counter(self._check(name), lambda s: {**s, "claimed": max(s["claimed"] + 1, at_least)})
        return state["claimed"]

    # -- reading ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        try:
            self._call("open the store", "head_bucket")
        except FileNotFoundError as exc:
            raise self._unreachable("open the store", f"the bucket {self.bucket!r} does not exist; create it, "
                                    "or fix CLASSIFIER_STORE") from exc

    def names(self) -> tuple[list[str], list[Skipped]]:
        objects, prefixes = self._list("list the models", self.prefix, "/")
        names, foreign = [], []
        for entry in sorted(p[len(self.prefix):].rstrip("/") for p in prefixes):
            if entry.startswith("."):
                continue
            if is_valid_model_name(entry):
                names.append(entry)
            else:
                foreign.append(Skipped(entry, "not a model prefix (a model is named like ^[a-z0-9][a-z0-9_-]{0,63}$)"))
        for obj in objects:
            entry = obj["Key"][len(self.prefix):]
            if not entry.startswith("."):
                foreign.append(Skipped(entry, "not a model prefix (an object beside the models)"))
        return names, foreign

    def _listing(self, name: str, *, fresh: bool = False) -> tuple[dict[int, dict[str, tuple[str, int, float]]], list[Skipped], int]:
        """Objects of ``name`` by version (visible or not), foreign ones, and ``deleted_through``."""
        now = time.monotonic()
        with self._lock:
            cached = self._listings.get(name)
        if cached and not fresh and now - cached[0] < self.list_ttl_s:
            return cached[1], cached[2], cached[3]
        state, _ = self._counter(name)
        objects, _ = self._list(f"list the versions of {name!r}", self._key(name, ""))
        by_version: dict[int, dict[str, tuple[str, int, float]]] = {}
        foreign = []
        for obj in objects:
            rest = obj["Key"][len(self._key(name, "")):]
            number_part, _, filename = rest.partition("/")
            number = version_number(number_part)
            if number is None or not filename or "/" in filename:
                foreign.append(Skipped(f"{name}/{rest}", "not a version (a version is a prefix named by its number)"))
                continue
            by_version.setdefault(number, {})[filename] = (obj["ETag"], obj["Size"], obj["LastModified"].timestamp())
        with self._lock:
            self._listings[name] = (now, by_version, foreign, state["deleted_through"])
        return by_version, foreign, state["deleted_through"]

    def _forget(self, name: str) -> None:
        with self._lock:
            self._listings.pop(name, None)

    def versions(self, name: str) -> tuple[list[int], list[Skipped]]:
        by_version, foreign, deleted_through = self._listing(self._check(name))
        visible = [v for v, files in by_version.items() if MANIFEST_FILE in files and v > deleted_through]
        return sorted(visible), foreign

    def identity(self, name: str, version: int) -> tuple | None:
        files = self._listing(self._check(name))[0].get(version)
        return tuple(sorted((f, etag) for f, (etag, _, _) in files.items())) if files else None

    def read(self, name: str, version: int) -> StoredVersion:
        """The manifest of one version, its artifacts copied to the local cache and checked."""
        self._check(name)
        try:
            answer = self._call(f"read {name!r} version {version}", "get_object", Key=self._key(name, str(version), MANIFEST_FILE))
        except FileNotFoundError as exc:
            raise StoreEntryError(f"no {MANIFEST_FILE}") from exc
        if answer.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
            raise StoreEntryError(f"{MANIFEST_FILE} is larger than {MAX_MANIFEST_BYTES} bytes")
        artifacts, record = check_manifest(answer["Body"].read())
        folder = self.cache / name / f"{version}-{answer['ETag'].strip(chr(34))}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for filename, digest in artifacts.items():
                self._fetch(name, version, filename, digest, folder)
            os.utime(folder)  # recently used: trimmed last
        except OSError as exc:
            raise StoreUnavailable(
                f"Could not copy {name!r} version {version} to the local cache {str(self.cache)!r} "
                f"(CLASSIFIER_STORE_CACHE): {exc.strerror or exc}. Free space or make it writable.",
                store=self.location) from exc
        self._trim_cache(keep=folder)
        return StoredVersion(folder, record)

    def _fetch(self, name: str, version: int, filename: str, digest: str, folder: Path) -> None:
        target = folder / filename
        if target.is_file() and sha256_of(target) == digest:
            return
        try:
            answer = self._call(f"read {name!r} version {version}", "get_object", Key=self._key(name, str(version), filename))
        except FileNotFoundError as exc:
            raise StoreEntryError(f"artifact {filename} is missing") from exc
        temp = folder / f".part-{uuid.uuid4().hex}"
        sha = hashlib.sha256()
        try:
            with open(temp, "wb") as out:
                for chunk in answer["Body"].iter_chunks(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
            if sha.hexdigest() != digest:
                raise StoreEntryError(f"artifact {filename} does not match its recorded SHA-256 (damaged or replaced)")
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def _trim_cache(self, keep: Path) -> None:
        """Removes the least recently used copies while the cache holds more than its bound."""
        try:
            folders = [p for model in self.cache.iterdir() if model.is_dir() for p in model.iterdir() if p.is_dir()]
            sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in folders}
        except OSError:
            return  # another thread trimmed meanwhile; the next read trims again
        total = sum(sizes.values())
        for folder in sorted(folders, key=lambda p: p.stat().st_mtime if p.exists() else 0):
            if total <= self.cache_bytes:
                break
            if folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= sizes[folder]

    # -- writing ---------------------------------------------------------------------------------

    def save(self, name: str, record: dict[str, Any], write_artifacts: Callable[[Path], None]) -> int:
        """Writes a new version: artifacts, then the manifest if absent; returns its number."""
        self._check(name)
        # The number is claimed first: a DELETE from here on (through any replica) hides this version.
        version = self.claim_version(name)
        temp = self.cache / f".tmp-{uuid.uuid4().hex}"
        try:
            temp.mkdir(parents=True)
            write_artifacts(temp)
            artifacts = {path.name: sha256_of(path) for path in sorted(temp.iterdir())}
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise StoreUnavailable(
                f"Could not write a version of {name!r} in the local cache {str(self.cache)!r} "
                f"(CLASSIFIER_STORE_CACHE) before upload: {exc.strerror or exc}. Nothing stored was changed.",
                store=self.location) from exc
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        manifest = manifest_bytes(record, artifacts)
        try:
            while True:
                action = f"save {name!r} version {version}"
                for filename in artifacts:
                    with open(temp / filename, "rb") as body:
                        self._call(action, "put_object", Key=self._key(name, str(version), filename), Body=body)
                try:
                    answer = self._call(action, "put_object", Key=self._key(name, str(version), MANIFEST_FILE),
                                        Body=manifest, ContentType="application/json", IfNoneMatch="*")
                    break
                except PreconditionFailed:
                    # a manifest with this number exists without a claim (written by hand): claim on past it
                    log.warning("%s/%d already has a manifest without a claim; claiming the next number", name, version)
                    version = self.claim_version(name)
            if self._counter(name)[0]["deleted_through"] >= version:
                self._remove_version(name, version)
                raise deleted_meanwhile(name)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        self._forget(name)
        # What was just uploaded is what a read would fetch: keep it as the cached copy.
        cached = self.cache / name / f"{version}-{answer['ETag'].strip(chr(34))}"
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.rename(temp, cached)
        except OSError:
            shutil.rmtree(temp, ignore_errors=True)
        return version

    def delete(self, name: str) -> bool:
        """Hides every version at once (one compare-and-swap of the counter), then removes them."""
        self._check(name)
        if not self._visible(name):
            return False
        state = self._swap_counter(name, lambda s: {**s, "deleted_through": s["claimed"]})
        self._forget(name)
        try:
            self._remove_through(name, state["deleted_through"])
        except StoreUnreachable as exc:  # hidden already; the objects go at the next start
            log.warning("deleted %s, but its objects stay until the next start: %s", name, exc.detail)
        return True

    def _visible(self, name: str) -> bool:
        by_version, _, deleted_through = self._listing(name, fresh=True)
        return any(MANIFEST_FILE in files and v > deleted_through for v, files in by_version.items())

    def _remove_version(self, name: str, version: int) -> None:
        self._remove(f"remove {name!r} version {version}", [
            o["Key"] for o in self._list(f"list {name!r} version {version}", self._key(name, str(version), ""))[0]])

    def _remove_through(self, name: str, deleted_through: int) -> list[str]:
        by_version, _, _ = self._listing(name, fresh=True)
        removed = [v for v in by_version if v <= deleted_through]
        for version in removed:
            self._remove_version(name, version)
        self._forget(name)
        return [f"{name}/{v}" for v in removed]

    def _remove(self, action: str, keys: list[str]) -> None:
        # Manifests first: a version stops being visible before any of its artifacts goes.
        keys = sorted(keys, key=lambda k: not k.endswith("/" + MANIFEST_FILE))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            if batch:
                self._call(action, "delete_objects", Delete={"Objects": batch, "Quiet": True})

    def remove_leftovers(self, older_than_s: float) -> list[str]:
        """Removes deleted versions and versions without a manifest older than ``older_than_s``
        (a save interrupted by a crash)."""
        cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
        removed = []
        names, _ = self.names()
        for name in names:
            by_version, _, deleted_through = self._listing(name, fresh=True)
            removed += self._remove_through(name, deleted_through) if any(v <= deleted_through for v in by_version) else []
            for version, files in by_version.items():
                if version > deleted_through and MANIFEST_FILE not in files and max(t for _, _, t in files.values()) < cutoff:
                    self._remove_version(name, version)
                    removed.append(f"{name}/{version}")
            self._forget(name)
        for temp in self.cache.glob(".tmp-*"):
            if temp.stat().st_mtime < cutoff:
                shutil.rmtree(temp, ignore_errors=True)
        return removed

