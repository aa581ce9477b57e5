"""Waiting for company: the encoder's batcher and the gateway's coalescer hold a batch back briefly
for the requests about to join it, by one rule (:class:`Following`).

Pure: asyncio only. Any package may import it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

# The longest wait for the clients a pass answered, as a share of that pass's duration: the cores idle
# that long at most, for a pass twice as large.
FOLLOW_FRACTION = 0.3


@dataclass(frozen=True)
class Following:
    """The clients a pass answered, to be waited for before the next pass: until the queue holds a
    request from each of them (those the pass served, back with their next one, and those that were
    queued when it ended), for at most ``FOLLOW_FRACTION`` of the pass's duration. Otherwise
    concurrent clients settle into two halves taking turns, each pass half as large, and a pass of 16
    sentences computes slower per sentence than one of 32 (bench/results has the figures). A pass
    that served one request leaves nobody to follow: a lone client never waits."""

    clients: int
    wait_s: float
    ended: float  # loop time

    @classmethod
    def after(cls, served: int, clients: int, started: float, ended: float) -> Following | None:
        """After a pass that served ``served`` requests, ``clients`` counting those queued when it ended."""
        return cls(clients, FOLLOW_FRACTION * (ended - started), ended) if served > 1 else None


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
