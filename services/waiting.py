"""Waiting for company: the encoder's batcher and the gateway's coalescer hold a batch back briefly
for the requests about to join it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(done: Callable[[], bool], event: asyncio.Event, timeout_s: float) -> None:
    """Return once ``done()`` holds (checked now and each time ``event`` is set) or ``timeout_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            return
