"""The model store: one directory per model, one sub-directory per version, written atomically.

Layout::

    <store>/<name>/<version>/manifest.json     the version record, and the SHA-256 of every artifact
    <store>/<name>/<version>/model.skops       a scikit-learn model (skops, never pickle), or
    <store>/<name>/<version>/head.safetensors  a torch head's weights, with
    <store>/<name>/<version>/head.json         its configuration

A version is written into ``<store>/<name>/.tmp-<random>/`` (artifacts first, manifest last, each
fsynced) and then renamed to its number. ``rename(2)`` is atomic and refuses to replace a non-empty
directory, so a crash never leaves half a version, never damages an existing one, and two processes
sharing the store each claim their own number (the loser of a race retries with the next one).
Entries starting with ``.`` are the store's own bookkeeping and are never read as models.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import skops.io

from services.contracts import is_valid_model_name
from services.errors import Conflict, InvalidInput

log = logging.getLogger("seam.classifier.store")

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "seam.classifier.version.v1"
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".deleted-"
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class StoreEntryError(Exception):
    """A stored entry that cannot be served (corrupt, foreign or unsafe); the message says why."""


@dataclass(frozen=True)
class Skipped:
    """An entry of the store that was not loaded, and why. ``identity`` tells a version directory
    apart from a later one of the same number (deleted and written again): that one is tried afresh."""

    path: str
    reason: str
    identity: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: int
    folder: Path
    record: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_number(entry: str) -> int | None:
    return int(entry) if entry.isdigit() and entry == str(int(entry)) and int(entry) > 0 else None


def dump_skops(obj: Any, path: Path) -> None:
    skops.io.dump(obj, path)


def load_skops(path: Path, *, allowed: frozenset[str], expected: type) -> Any:
    """Loads a skops file whose every type is skops' default-trusted or in ``allowed``, and whose
    top object is an ``expected``. Anything else is refused, never executed."""
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


class ModelStore:
    """Versions on disk. Pure file handling: what a version's artifacts mean is the caller's business."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, name: str) -> Path:
        if not is_valid_model_name(name):  # never build a path from an unchecked name
            raise InvalidInput(f"invalid model name {name!r}", name=name)
        return self.root / name

    # -- reading ------------------------------------------------------------------------------

    def names(self) -> tuple[list[str], list[Skipped]]:
        """Model names on disk, and the foreign entries found beside them."""
        if not self.root.is_dir():
            return [], []
        names, foreign = [], []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False) and is_valid_model_name(entry.name):
                names.append(entry.name)
            else:
                foreign.append(Skipped(entry.name, "not a model directory (a model is a directory named like ^[a-z0-9][a-z0-9_-]{0,63}$)"))
        return names, foreign

    def versions(self, name: str) -> tuple[list[int], list[Skipped]]:
        """Version numbers of ``name`` on disk (none when it does not exist), and foreign entries."""
        folder = self._folder(name)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        numbers, foreign = [], []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            number = _version_number(entry.name)
            if number is not None and entry.is_dir(follow_symlinks=False):
                numbers.append(number)
            else:
                foreign.append(Skipped(f"{name}/{entry.name}", "not a version directory (a version is a directory named by its number)"))
        return sorted(numbers), foreign

    def identity(self, name: str, version: int) -> tuple[int, int] | None:
        """(inode, mtime) of a version directory: a rename-in replaces both."""
        try:
            stat = os.stat(self._folder(name) / str(version))
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def read(self, name: str, version: int) -> StoredVersion:
        """The manifest of one version, after checking every artifact against its recorded hash."""
        folder = self._folder(name) / str(version)
        path = folder / MANIFEST_FILE
        try:
            if path.stat().st_size > _MAX_MANIFEST_BYTES:
                raise StoreEntryError(f"{MANIFEST_FILE} is larger than {_MAX_MANIFEST_BYTES} bytes")
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise StoreEntryError(f"no {MANIFEST_FILE}") from exc
        except (OSError, ValueError) as exc:
            raise StoreEntryError(f"unreadable {MANIFEST_FILE} ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise StoreEntryError(f"{MANIFEST_FILE} is not a seam classifier manifest ({MANIFEST_FORMAT})")
        artifacts, record = manifest.get("artifacts"), manifest.get("record")
        if not isinstance(artifacts, dict) or not artifacts or not isinstance(record, dict):
            raise StoreEntryError(f"{MANIFEST_FILE} lacks its artifacts or record")
        for filename, digest in artifacts.items():
            if not isinstance(filename, str) or "/" in filename or filename.startswith(".") or filename == MANIFEST_FILE:
                raise StoreEntryError(f"{MANIFEST_FILE} names an invalid artifact {filename!r}")
            try:
                actual = _sha256(folder / filename)
            except OSError as exc:
                raise StoreEntryError(f"artifact {filename} is missing or unreadable ({exc.strerror})") from exc
            if actual != digest:
                raise StoreEntryError(f"artifact {filename} does not match its recorded SHA-256 (damaged or replaced)")
        return StoredVersion(name, version, folder, record)

    # -- writing ------------------------------------------------------------------------------

    def save(self, name: str, record: dict[str, Any], write_artifacts: Callable[[Path], None]) -> int:
        """Writes a new version of ``name`` and returns its number. ``write_artifacts(folder)`` writes
        the model files; the manifest (``record`` plus their hashes) is written after them. Either
        the whole version appears under its number or nothing does."""
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            write_artifacts(temp)
            artifacts = {}
            for path in sorted(temp.iterdir()):
                _fsync(path)
                artifacts[path.name] = _sha256(path)
            manifest = {"format": MANIFEST_FORMAT, "record": record, "artifacts": artifacts}
            with open(temp / MANIFEST_FILE, "w") as f:
                json.dump(manifest, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            _fsync(temp)
            version = self._claim(folder, temp)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync(folder)
        return version

    def _claim(self, folder: Path, temp: Path) -> int:
        try:
            numbers = [n for n in (_version_number(p.name) for p in folder.iterdir()) if n is not None]
        except FileNotFoundError:
            numbers = []
        version = max(numbers, default=0) + 1
        while True:
            try:
                os.rename(temp, folder / str(version))
                return version
            except FileNotFoundError as exc:
                raise Conflict(f"model {folder.name!r} was deleted while this version was being saved") from exc
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                version += 1  # another writer claimed this number first

    def delete(self, name: str) -> bool:
        """Removes every version of ``name``; False when there was nothing to remove. The directory is
        renamed away first, so readers see the whole model or none of it."""
        folder = self._folder(name)
        trash = self.root / f"{_TRASH_PREFIX}{name}-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except (FileNotFoundError, NotADirectoryError):
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def remove_leftovers(self, older_than_s: float) -> list[str]:
        """Removes temporary directories of interrupted saves and deletes (a crash leaves them)."""
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        removed = []
        candidates = [p for p in self.root.glob(f"{_TRASH_PREFIX}*")]
        candidates += [p for p in self.root.glob(f"*/{_TEMP_PREFIX}*")]
        for path in candidates:
            try:
                if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path)
                    removed.append(str(path.relative_to(self.root)))
            except OSError as exc:
                log.warning("could not remove leftover %s: %s", path, exc)
        return removed
