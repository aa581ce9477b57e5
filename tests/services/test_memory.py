"""services.http.memory: freed memory goes back to the OS, at most once per interval, never failing a request;
``page_out`` hands back pages nothing reads, and never loses data; ``unmap_file_pages`` leaves a
file's unwritten pages in the file, and only those ``unwritten_file_ranges`` lists are ever given it."""

from __future__ import annotations

import mmap
import os
import time

import httpx
import numpy as np
from fastapi import FastAPI

from services.http.memory import MemoryReturner, MemoryReturnMiddleware, page_out, unmap_file_pages, unwritten_file_ranges
from tests.support import kernel_pages_out, mapping_rss, needs_pageout


class CountingLibc:
    def __init__(self) -> None:
        self.trims = 0
        self.options: list[tuple[int, int]] = []

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1

    def mallopt(self, option: int, value: int) -> int:
        self.options.append((option, value))
        return 1


def test_trims_at_most_once_per_interval_and_sets_the_threshold_once():
    returner = MemoryReturner(interval_s=3600)
    returner._libc = libc = CountingLibc()
    returner._last -= 3601
    for _ in range(5):
        returner.maybe_trim()
    assert libc.trims == 1
    returner.fixed_mmap_threshold()
    returner.fixed_mmap_threshold()
    assert libc.options == [(-3, 4 * 1024 * 1024)]


def test_the_real_c_library_is_called_without_error():
    returner = MemoryReturner(interval_s=0)
    returner.fixed_mmap_threshold()
    returner.maybe_trim()  # glibc here; a no-op elsewhere


async def test_the_middleware_trims_after_requests_even_failed_ones():
    returner = MemoryReturner(interval_s=0)
    returner._libc = libc = CountingLibc()
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict:
        return {}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("boom")

    wrapped = MemoryReturnMiddleware(app, returner)
    transport = httpx.ASGITransport(app=wrapped, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/ok")).status_code == 200
        assert (await client.get("/boom")).status_code == 500
    assert libc.trims == 2


@needs_pageout
def test_page_out_drops_a_file_mappings_pages_and_the_data_reads_back_the_same(tmp_path):
    pages = 64
    data = np.random.default_rng(0).integers(0, 256, pages * mmap.PAGESIZE, dtype=np.uint8)
    path = tmp_path / "weights.bin"
    with open(path, "wb") as f:
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())  # written back: clean pages, as a model file's are
    with open(path, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)  # as safetensors maps weights
    view = np.frombuffer(mapped, dtype=np.uint8)
    address = view.ctypes.data
    assert view.sum() == data.sum()  # every page read: resident
    assert mapping_rss(address) == pages * mmap.PAGESIZE
    assert page_out(address, view.nbytes) == pages * mmap.PAGESIZE
    # The kernel skips a page it cannot take off its lists at that moment (seen once, in a full suite
    # run on a fresh clone: every page stayed); a few more tries settle it.
    for _ in range(3):
        if mapping_rss(address) < pages * mmap.PAGESIZE // 4:
            break
        time.sleep(0.05)
        page_out(address, view.nbytes)
    assert mapping_rss(address) < pages * mmap.PAGESIZE // 4
    assert np.array_equal(view, data)
    del view
    mapped.close()


@needs_pageout
def test_page_out_never_loses_written_memory():
    array = np.arange(256 * 1024, dtype=np.int64)  # 2 MB, written: anonymous pages, no file behind
    assert page_out(array.ctypes.data, array.nbytes) > 0
    assert np.array_equal(array, np.arange(256 * 1024, dtype=np.int64))


def test_page_out_advises_only_the_whole_pages_inside_the_range():
    mapped = mmap.mmap(-1, 4 * mmap.PAGESIZE)
    address = np.frombuffer(mapped, dtype=np.uint8).ctypes.data  # page-aligned
    inside = page_out(address + 1, 3 * mmap.PAGESIZE)  # pages 1 and 2 only
    assert inside in (0, 2 * mmap.PAGESIZE)  # 0 where the system cannot page out
    if kernel_pages_out():
        assert inside == 2 * mmap.PAGESIZE
    assert page_out(address + 1, mmap.PAGESIZE - 2) == 0


def _inside(ranges: list[tuple[int, int]], address: int, nbytes: int) -> bool:
    return any(low <= address and address + nbytes <= high for low, high in ranges)


def test_unwritten_file_pages_are_unmapped_and_read_back_the_same_and_written_ones_are_never_listed(tmp_path):
    pages = 64
    data = np.random.default_rng(1).integers(0, 256, pages * mmap.PAGESIZE, dtype=np.uint8)
    path = tmp_path / "weights.bin"
    path.write_bytes(data.tobytes())
    with open(path, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)  # as safetensors maps weights
    view = np.frombuffer(mapped, dtype=np.uint8)
    address = view.ctypes.data
    assert view.sum() == data.sum()  # every page read: resident
    assert _inside(unwritten_file_ranges(), address, view.nbytes)
    assert unmap_file_pages(address, view.nbytes) == pages * mmap.PAGESIZE
    assert mapping_rss(address) == 0  # out of this process at once; the page cache keeps them
    assert np.array_equal(view, data) and mapping_rss(address) > 0  # read again: mapped back, the same
    # One page written (copied on write): the mapping is no longer listed, so nothing would unmap it.
    writable = np.frombuffer(mapped, dtype=np.uint8)
    writable[0] ^= 0xFF
    assert not _inside(unwritten_file_ranges(), address, view.nbytes)
    # Anonymous memory is never listed either.
    array = np.arange(256 * 1024, dtype=np.int64)
    assert not _inside(unwritten_file_ranges(), array.ctypes.data, array.nbytes)
    del view, writable
    mapped.close()
