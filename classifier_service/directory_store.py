"""The model store in a directory: one sub-directory per model, one per version, written atomically.

Layout::

    <store>/<name>/<version>/manifest.json     the version record, and the SHA-256 of every artifact
    <store>/<name>/<version>/model.skops       a scikit-learn model (skops, never pickle), or
    <store>/<name>/<version>/head.safetensors  a torch head's weights, with
    <store>/<name>/<version>/head.json         its configuration

A version is written into ``<store>/<name>/.tmp-<random>/`` (artifacts first, manifest last, each
fsynced) and then renamed to its number. ``rename(2)`` is atomic and refuses to replace a non-empty
directory, so a crash never leaves half a version and never damages an existing one.

Version numbers are never reused, not even after the model is deleted: before its rename, a save
claims its number in ``<store>/.claims/<name>/<number>``, a file created with ``O_CREAT | O_EXCL``
(create-if-absent), and the claims outlive ``DELETE``. The next number is one above the highest
claim and the highest version on disk; two processes sharing the store that race for one number get
distinct ones (the loser of the create retries with the next). A claim whose save then fails leaves
a gap, never a reuse.

Entries starting with ``.`` are the store's own bookkeeping and are never read as models. An
``OSError`` that means the store cannot be written (full, read-only, no permission) becomes
:class:`~services.errors.StoreUnavailable` (507) naming the store and the cause.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifier_service.store import (
    MANIFEST_FILE, MAX_MANIFEST_BYTES, Skipped, StoredVersion, StoreEntryError, check_manifest, deleted_meanwhile,
    manifest_bytes, sha256_of, version_number,
)
from services.contracts import is_valid_model_name
from services.errors import InvalidInput, StoreUnavailable

log = logging.getLogger("seam.classifier.store")

_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".deleted-"
CLAIMS_DIR = ".claims"
# errno values that mean "the store cannot be written" rather than a bug: full, read-only, forbidden.
_UNWRITABLE = {
    errno.ENOSPC: "the store's file system is full (ENOSPC)",
    errno.EDQUOT: "the store's disk quota is exhausted (EDQUOT)",
    errno.EROFS: "the store's file system is read-only (EROFS)",
    errno.EACCES: "the service may not write to the store (EACCES)",
    errno.EPERM: "the service may not write to the store (EPERM)",
}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Versions on disk. Pure file handling: what a version's artifacts mean is the caller's business."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

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
            number = version_number(entry.name)
            if number is not None and entry.is_dir(follow_symlinks=False):
                numbers.append(number)
            else:
                foreign.append(Skipped(f"{name}/{entry.name}", "not a version directory (a version is a directory named by its number)"))
        return sorted(numbers), foreign

    def identity(self, name: str, version: int) -> tuple | None:
        """What tells a version directory's state apart: its (inode, mtime), which a rename-in
        replaces, and each file's (name, size, mtime), which a repair in place changes."""
        folder = self._folder(name) / str(version)
        try:
            stat = os.stat(folder)
            files = tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)))
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, files

    def read(self, name: str, version: int) -> StoredVersion:
        """The manifest of one version, after checking every artifact against its recorded hash."""
        folder = self._folder(name) / str(version)
        path = folder / MANIFEST_FILE
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise StoreEntryError(f"{MANIFEST_FILE} is larger than {MAX_MANIFEST_BYTES} bytes")
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreEntryError(f"no {MANIFEST_FILE}") from exc
        except OSError as exc:
            raise StoreEntryError(f"unreadable {MANIFEST_FILE} ({exc})") from exc
        artifacts, record = check_manifest(raw)
        for filename, digest in artifacts.items():
            try:
                actual = sha256_of(folder / filename)
            except OSError as exc:
                raise StoreEntryError(f"artifact {filename} is missing or unreadable ({exc.strerror})") from exc
            if actual != digest:
                raise StoreEntryError(f"artifact {filename} does not match its recorded SHA-256 (damaged or replaced)")
        return StoredVersion(folder, record)

    # -- writing ------------------------------------------------------------------------------

    def save(self, name: str, record: dict[str, Any], write_artifacts: Callable[[Path], None]) -> int:
        """Writes a new version of ``name`` and returns its number. ``write_artifacts(folder)`` writes
        the model files; the manifest (``record`` plus their hashes) is written after them. Either
        the whole version appears under its number or nothing does."""
        folder = self._folder(name)
        temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temp.mkdir()
        except FileNotFoundError as exc:  # the model's directory was renamed away between the two
            raise deleted_meanwhile(name) from exc
        except OSError as exc:
            raise self._unwritable(exc, f"save a version of {name!r}") from exc
        try:
            write_artifacts(temp)
            artifacts = {}
            for path in sorted(temp.iterdir()):
                _fsync(path)
                artifacts[path.name] = sha256_of(path)
            with open(temp / MANIFEST_FILE, "wb") as f:
                f.write(manifest_bytes(record, artifacts))
                f.flush()
                os.fsync(f.fileno())
            _fsync(temp)
            version = self._publish(name, folder, temp)
        except BaseException as exc:
            # Whatever failed (a writer's own error type included), a folder gone means a DELETE took it.
            vanished = isinstance(exc, Exception) and not (temp.is_dir() and folder.is_dir())
            shutil.rmtree(temp, ignore_errors=True)
            if vanished:
                # DELETE (here or in another process sharing the store) renamed the model away
                raise deleted_meanwhile(name) from exc
            if isinstance(exc, OSError):
                raise self._unwritable(exc, f"save a version of {name!r}") from exc
            raise
        try:
            _fsync(folder)
        except FileNotFoundError as exc:
            raise deleted_meanwhile(name) from exc
        return version

    def _publish(self, name: str, folder: Path, temp: Path) -> int:
        """Claims the next number and renames ``temp`` to it."""
        while True:
            version = self.claim_version(name, at_least=max(self._numbers_on_disk(folder), default=0) + 1)
            try:
                os.rename(temp, folder / str(version))
                return version
            except FileNotFoundError:
                raise
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # a version directory with this number exists without a claim (a store written before
                # claims existed, or by hand): claim on past it

    @staticmethod
    def _numbers_on_disk(folder: Path) -> list[int]:
        try:
            return [n for n in (version_number(p.name) for p in folder.iterdir()) if n is not None]
        except FileNotFoundError:
            return []

    # -- version numbers ----------------------------------------------------------------------

    def _claims(self, name: str) -> Path:
        self._folder(name)  # checks the name
        return self.root / CLAIMS_DIR / name

    def highest_claimed(self, name: str) -> int:
        """The highest version number ever claimed for ``name`` (0 when none): deleted ones count."""
        try:
            entries = os.listdir(self._claims(name))
        except FileNotFoundError:
            return 0
        return max((n for n in map(version_number, entries) if n is not None), default=0)

    def claim_version(self, name: str, *, at_least: int = 1) -> int:
        """Claims a version number of ``name`` no other save, in this process or another sharing the
        store, ever got or will get: above every earlier claim and at least ``at_least``. Each number
        is a file created if absent (atomic on a local file system; a conditional put on an object
        store), fsynced with its directory, so a claim survives a crash and a DELETE."""
        claims = self._claims(name)
        claims.mkdir(parents=True, exist_ok=True)
        version = max(self.highest_claimed(name) + 1, at_least)
        while True:
            try:
                fd = os.open(claims / str(version), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                version += 1  # another writer claimed this number first
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync(claims)
            return version

    # -- failures -----------------------------------------------------------------------------

    def _unwritable(self, exc: OSError, action: str) -> Exception:
        """StoreUnavailable for an OSError meaning the store cannot be written; ``exc`` itself otherwise."""
        cause = _UNWRITABLE.get(exc.errno or 0)
        if cause is None:
            return exc
        return StoreUnavailable(
            f"Could not {action}: {cause}, in the model store {str(self.root)!r} (CLASSIFIER_STORE); "
            f"{exc.strerror or exc}. Nothing stored was changed. Free space or make the store writable, then retry.",
            store=str(self.root),
            errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
        )

    def delete(self, name: str) -> bool:
        """Removes every version of ``name``; False when there was nothing to remove. The directory is
        renamed away first, so readers see the whole model or none of it."""
        folder = self._folder(name)
        trash = self.root / f"{_TRASH_PREFIX}{name}-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._unwritable(exc, f"delete {name!r}") from exc
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
