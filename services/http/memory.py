"""Giving freed memory back to the operating system, in every service process.

Forward passes and tensor frames allocate blocks of every batch size. glibc's malloc keeps what is
freed in its heaps, and raises its mmap threshold after each large block it frees, so ever larger
blocks come from the heaps too: a busy process's resident memory then climbs in steps for a long
while (the soak measured +28 % in five minutes for the encoder). A fixed mmap threshold returns large
blocks to the system when they are freed, and an occasional ``malloc_trim`` releases the free pages
left inside the heaps. Both are no-ops where the C library is not glibc. ``freeze_heap`` keeps
Python's garbage collector off the imported libraries' objects. ``page_out`` hands back the resident
pages of a memory range the process no longer reads (weights memory-mapped from a file, say);
``unmap_file_pages`` those of a range it reads rarely, which stay in the file's page cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import mmap
import threading
import time

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("seam")

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
_MADV_DONTNEED = 4  # from <sys/mman.h>
_MADV_PAGEOUT = 21  # Linux 5.4+, from <sys/mman.h>
MAPS = "/proc/self/smaps"
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_INTERVAL_S = 10.0


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - present in glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()  # loaded once per process; None where the C library is not glibc


class MemoryReturner:
    """``fixed_mmap_threshold()`` once per process; ``maybe_trim()`` after work, as often as convenient:
    it trims at most once per ``interval_s``."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self._libc = _LIBC
        self._interval_s = interval_s
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._fixed = False

    def fixed_mmap_threshold(self, nbytes: int = MMAP_THRESHOLD_BYTES) -> None:
        if self._libc is None or self._fixed:
            return
        self._fixed = True
        if not self._libc.mallopt(_M_MMAP_THRESHOLD, nbytes):
            log.warning("mallopt(M_MMAP_THRESHOLD) refused: resident memory may creep up under load")

    def due(self) -> bool:
        """Whether a trim is due: True for one caller per ``interval_s``, who then calls :meth:`trim`.
        Cheap: a clock read, and a lock only when the interval has passed."""
        if self._libc is None or time.monotonic() - self._last < self._interval_s:
            return False
        with self._lock:
            if time.monotonic() - self._last < self._interval_s:
                return False
            self._last = time.monotonic()
        return True

    def trim(self) -> None:
        """``malloc_trim``: milliseconds on a large heap, so never on the event loop."""
        if self._libc is not None:
            self._libc.malloc_trim(0)

    def maybe_trim(self) -> None:
        """Trims here when one is due: for a worker thread (the encoder's lead thread)."""
        if self.due():
            self.trim()


RETURNER = MemoryReturner()  # one per process: malloc's settings are the process's


def page_out(address: int, nbytes: int) -> int:
    """Ask the kernel to reclaim the whole pages inside ``[address, address + nbytes)``; returns the
    bytes advised (0 where the system cannot: not Linux, a kernel before 5.4).

    ``MADV_PAGEOUT`` never loses data: pages of a file mapping that were never written are dropped
    (read again from the file if ever touched), anything else is swapped out or left as it is, and so
    are pages another process maps too. So it is safe on any range; it frees memory only where nothing
    reads the range any more."""
    return _advise(address, nbytes, _MADV_PAGEOUT)


def unwritten_file_ranges(smaps: str = MAPS) -> list[tuple[int, int]]:
    """The address ranges of this process's file mappings none of whose pages it has written
    (``Anonymous: 0 kB`` in ``smaps``: no page copied on write): there, and only there,
    ``unmap_file_pages`` loses nothing. None listed where it cannot be told (not Linux)."""
    ranges: list[tuple[int, int]] = []
    try:
        with open(smaps) as lines:
            current: tuple[int, int] | None = None
            for line in lines:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line: range perms offset dev inode [path]
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    current = (start, end) if len(head) >= 6 and head[5].startswith("/") else None
                elif current is not None and head[:1] == ["Anonymous:"]:
                    if head[1] == "0":
                        ranges.append(current)
                    current = None
    except (OSError, ValueError):
        return []
    return ranges


def unmap_file_pages(address: int, nbytes: int) -> int:
    """Take the whole pages inside the range out of this process's memory (``MADV_DONTNEED``) and leave
    them in the file's page cache: reading them again maps them back (a minor fault, no disk read), so
    a range read now and then costs resident memory only while it is read. Returns the bytes advised.
    Only for a range inside one of ``unwritten_file_ranges``: in anonymous memory, or over pages written
    since, ``MADV_DONTNEED`` would zero them."""
    return _advise(address, nbytes, _MADV_DONTNEED)


def _advise(address: int, nbytes: int, advice: int) -> int:
    """``madvise`` the whole pages inside the range; the bytes advised, 0 where the system refuses."""
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (address + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if _LIBC is None or end <= start:
        return 0
    if _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), advice) != 0:
        return 0
    return end - start


def freeze_heap() -> None:
    """Hide what is alive now (the imported libraries: torch, transformers, scikit-learn...) from
    Python's cyclic garbage collector; for a service's entry point, just before it serves. Each full
    collection otherwise walks those ~450,000 objects: a 270 ms stall of the event loop, measured in
    the encoder under load, every ten-odd seconds. They live as long as the process anyway."""
    gc.collect()
    gc.freeze()


class MemoryReturnMiddleware:
    """Trims (at most every ``TRIM_INTERVAL_S``) when an HTTP request has been answered: in a worker
    thread, the event loop serving others meanwhile."""

    def __init__(self, app: ASGIApp, returner: MemoryReturner = RETURNER) -> None:
        self.app = app
        self.returner = returner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and self.returner.due():
                await anyio.to_thread.run_sync(self.returner.trim)


def install_memory_return(app: FastAPI) -> None:
    RETURNER.fixed_mmap_threshold()
    app.add_middleware(MemoryReturnMiddleware)
