"""What the classifier asks of a model store, and what every store shares: the manifest, the entries
it skips, the version numbers it claims, and the skops files scikit-learn models are saved in.

Two stores implement :class:`VersionStore` with the same guarantees:
:class:`~classifier_service.directory_store.ModelStore` (a directory: atomic renames, claims created
if absent) and :class:`~classifier_service.object_store.ObjectModelStore` (``s3://``: conditional
writes). ``CLASSIFIER_STORE`` picks one (:func:`open_store`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.errors import Conflict

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "seam.classifier.version.v1"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class StoreEntryError(Exception):
    """A stored entry that cannot be served (corrupt, foreign or unsafe); the message says why."""


@dataclass(frozen=True)
class Skipped:
    """An entry of the store that was not loaded, and why. ``identity`` tells a version directory
    apart from a later one of the same number (deleted and written again): that one is tried afresh."""

    path: str
    reason: str
    identity: tuple | None = field(default=None, compare=False)
    version: int | None = field(default=None, compare=False)  # set when a version directory is damaged


@dataclass(frozen=True)
class StoredVersion:
    """A version read and checked: the folder holding its artifacts, and its record."""

    folder: Path
    record: dict[str, Any]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def version_number(entry: str) -> int | None:
    return int(entry) if entry.isdigit() and entry == str(int(entry)) and int(entry) > 0 else None


def deleted_meanwhile(name: str) -> Conflict:
    """A save that finds its model deleted (through this classifier or another sharing the store)."""
    return Conflict(
        f"The model {name!r} was deleted meanwhile (by another request, perhaps through another "
        "classifier sharing the store), while this version was being saved; nothing was saved. "
        "Fit again to create it anew.",
        name=name,
    )


# skops is imported on the first save or load, not with the service: it imports every scikit-learn
# estimator module to list the types it trusts (0.8 s and 20 MB here), which a classifier whose store
# is empty, and the fit workers' server (workers never save), do without.
def dump_skops(obj: Any, path: Path) -> None:
    import skops.io

    skops.io.dump(obj, path)


def load_skops(path: Path, *, allowed: frozenset[str], expected: type) -> Any:
    """Loads a skops file whose every type is skops' default-trusted or in ``allowed``, and whose
    top object is an ``expected``. Anything else is refused, never executed."""
    import skops.io

    try:
        untrusted = set(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # a damaged or foreign file fails in many ways; all mean "not ours"
        raise StoreEntryError(f"{path.name} is not a readable skops file ({type(exc).__name__}: {exc})") from exc
    refused = sorted(untrusted - allowed)
    if refused:
        raise StoreEntryError(f"{path.name} holds types outside the allow-list: {', '.join(refused)}")
    try:
        obj = skops.io.load(path, trusted=sorted(untrusted))
    except Exception as exc:
        raise StoreEntryError(f"{path.name} could not be loaded ({type(exc).__name__}: {exc})") from exc
    if type(obj) is not expected:
        raise StoreEntryError(f"{path.name} holds a {type(obj).__name__}, expected a {expected.__name__}")
    return obj


def manifest_bytes(record: dict[str, Any], artifacts: dict[str, str]) -> bytes:
    """The manifest of a version: its record, and each artifact's SHA-256 by file name."""
    return json.dumps({"format": MANIFEST_FORMAT, "record": record, "artifacts": artifacts}, indent=2).encode()


def check_manifest(raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """A manifest's artifacts (file name -> SHA-256) and record, or StoreEntryError saying what is wrong."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise StoreEntryError(f"unreadable {MANIFEST_FILE} ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StoreEntryError(f"{MANIFEST_FILE} is not a seam classifier manifest ({MANIFEST_FORMAT})")
    artifacts, record = manifest.get("artifacts"), manifest.get("record")
    if not isinstance(artifacts, dict) or not artifacts or not isinstance(record, dict):
        raise StoreEntryError(f"{MANIFEST_FILE} lacks its artifacts or record")
    for filename, digest in artifacts.items():
        if not isinstance(filename, str) or "/" in filename or filename.startswith(".") or filename == MANIFEST_FILE:
            raise StoreEntryError(f"{MANIFEST_FILE} names an invalid artifact {filename!r}")
        if not isinstance(digest, str):
            raise StoreEntryError(f"{MANIFEST_FILE} gives artifact {filename} no SHA-256")
    return artifacts, record


class VersionStore(Protocol):
    """What the runtime needs of a store; both stores implement it with the same guarantees:
    a version appears whole or not at all, its number is claimed once and never reused (not even after
    a DELETE), a crash mid-save leaves nothing visible, and processes sharing the store see each
    other's versions."""

    location: str  # named in errors and logs

    def prepare(self) -> None: ...
    def names(self) -> tuple[list[str], list[Skipped]]: ...
    def versions(self, name: str) -> tuple[list[int], list[Skipped]]: ...
    def identity(self, name: str, version: int) -> tuple | None: ...
    def read(self, name: str, version: int) -> StoredVersion: ...
    def save(self, name: str, record: dict[str, Any], write_artifacts: Callable[[Path], None]) -> int: ...
    def delete(self, name: str) -> bool: ...
    def claim_version(self, name: str, *, at_least: int = 1) -> int: ...
    def highest_claimed(self, name: str) -> int: ...
    def remove_leftovers(self, older_than_s: float) -> list[str]: ...


def open_store(settings: Any) -> VersionStore:
    """The store ``CLASSIFIER_STORE`` names: a directory, or ``s3://bucket/prefix``."""
    if isinstance(settings.store, str) and settings.store.startswith("s3://"):
        from classifier_service.object_store import ObjectModelStore  # boto3 only where it is used

        return ObjectModelStore.from_settings(settings)
    from classifier_service.directory_store import ModelStore

    return ModelStore(settings.store)
