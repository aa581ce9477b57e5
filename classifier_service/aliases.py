"""Movable aliases of a model's versions (``production``, ``canary``...), kept in the classifier's store.

One small JSON file per model, ``<store>/.aliases/<name>.json`` (``{"production": 3}``): the store's
dot-prefixed bookkeeping, never read as a model. Every change is a read-modify-write under an exclusive
``flock`` on ``<store>/.aliases/.lock`` (processes sharing the store take turns), written to a temporary
file, fsynced and renamed over the old one: a reader sees the old mapping or the new one, never half of
one, and a crash leaves the old one. ``set`` takes an optional ``expected`` version (compare-and-swap),
the operation a store without renames (S3's conditional writes) offers too: this class is the interface
such a backend implements.

Deleting a model deletes its aliases (a new model of the same name starts with none).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from services.contracts import is_valid_model_name
from services.errors import Conflict, InvalidInput, NotFound
from services.inputs import check_alias

ALIASES_DIR = ".aliases"
_MAX_BYTES = 1 << 20


class AliasNotFound(NotFound):
    title, slug = "Alias not found", "alias-not-found"


class AliasMoved(Conflict):
    """A compare-and-swap lost: the alias no longer points where the caller expected."""

    title, slug = "Alias moved meanwhile", "alias-moved"


class Aliases:
    """What the classifier needs of alias storage; a backend gives ``get`` and ``_update`` (one atomic
    read-modify-write of a model's mapping): :class:`AliasStore` (a directory, under a lock) and
    :class:`classifier_service.bucket.ObjectAliasStore` (S3, compare-and-swap on the object's ETag)."""

    def get(self, name: str) -> dict[str, int]:
        raise NotImplementedError

    def _update(self, name: str, change: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
        raise NotImplementedError

    def set(self, name: str, alias: str, version: int, *, expected: int | None = None) -> dict[str, int]:
        """Points ``alias`` at ``version``; with ``expected``, only if it points there now (0: unset).
        Returns every alias of the model afterwards."""
        check_alias(alias)

        def change(aliases: dict[str, int]) -> dict[str, int]:
            if expected is not None and aliases.get(alias, 0) != expected:
                raise AliasMoved(
                    f"alias {alias!r} of {name!r} points at {aliases.get(alias) or 'nothing'}, not {expected or 'nothing'}: "
                    "someone moved it meanwhile; read it again and retry", alias=alias, current=aliases.get(alias),
                )
            return {**aliases, alias: version}

        return self._update(name, change)

    def delete(self, name: str, alias: str) -> dict[str, int]:
        check_alias(alias)

        def change(aliases: dict[str, int]) -> dict[str, int]:
            if alias not in aliases:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}", name=name, alias=alias)
            return {k: v for k, v in aliases.items() if k != alias}

        return self._update(name, change)

    def drop(self, name: str) -> None:
        """Every alias of ``name`` (the model was deleted)."""
        self._update(name, lambda aliases: {})


def parse_aliases(data: object) -> dict[str, int]:
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in sorted(data.items())
            if is_valid_model_name(str(k)) and isinstance(v, int) and not isinstance(v, bool) and v > 0}


def open_aliases(store: object) -> Aliases:
    """The alias storage beside a model store: the same directory, or the same bucket and prefix."""
    root = getattr(store, "root", None)
    if root is not None:
        return AliasStore(root)
    from classifier_service.bucket import ObjectAliasStore  # boto3 only where it is used

    return ObjectAliasStore(store)


class AliasStore(Aliases):
    """Aliases of every model under ``root`` (the classifier's store)."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root) / ALIASES_DIR

    def _path(self, name: str) -> Path:
        if not is_valid_model_name(name):  # never build a path from an unchecked name
            raise InvalidInput(f"invalid model name {name!r}", name=name)
        return self.folder / f"{name}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def get(self, name: str) -> dict[str, int]:
        """The model's aliases; none when it has none (or does not exist)."""
        path = self._path(name)
        try:
            if path.stat().st_size > _MAX_BYTES:
                raise Conflict(f"{ALIASES_DIR}/{name}.json is larger than {_MAX_BYTES} bytes: not an alias file")
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise Conflict(f"{ALIASES_DIR}/{name}.json in the store is unreadable ({exc}); remove it to clear "
                           "the model's aliases") from exc
        return parse_aliases(data)

    def _write(self, name: str, aliases: dict[str, int]) -> None:
        path = self._path(name)
        if not aliases:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        temp = self.folder / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(temp, "w", encoding="utf-8") as f:
                json.dump(dict(sorted(aliases.items())), f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(temp, path)  # atomic: readers see the old mapping or the new one
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _update(self, name: str, change: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
        with self._locked():
            aliases = change(self.get(name))
            self._write(name, aliases)
            return aliases
