"""services.memory: freed memory goes back to the OS, at most once per interval, never failing a request."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.memory import MemoryReturner, MemoryReturnMiddleware


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
