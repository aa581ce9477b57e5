"""The one cache type of the gateway: bounded, each entry optionally kept for a time.

Version records (``GATEWAY_PIPELINE_TTL_S``), check results, routes, reference samples and
measurements all live in one of these. A full cache drops its oldest entry, so it holds what is in
use, not everything ever asked for; an expired entry is dropped when it is next read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

# Entries kept at most, unless told otherwise; past that the oldest are read (or decided) again when asked for.
SIZE = 4096


class Cache(Generic[K, V]):
    """At most ``size`` entries; each kept ``ttl_s`` seconds on ``clock`` (None: until it is pushed out)."""

    def __init__(self, size: int = SIZE, ttl_s: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K, default: D = None) -> V | D:  # type: ignore[assignment]
        found = self._items.get(key)
        if found is None:
            return default
        if self.ttl_s is not None and found[0] <= self._clock():
            del self._items[key]
            return default
        return found[1]

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)  # re-inserted: the newest again
        if len(self._items) >= self.size:
            del self._items[next(iter(self._items))]
        expires = self._clock() + self.ttl_s if self.ttl_s is not None else 0.0
        self._items[key] = (expires, value)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def drop(self, which: Callable[[K], bool]) -> None:
        """Drops every entry whose key ``which`` selects."""
        for key in [k for k in self._items if which(k)]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)
