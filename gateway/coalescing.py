"""Request coalescing: predict requests for the same pipeline version that arrive while earlier ones
are in flight are merged, so the internal hops (one encoder call, one classifier call per link) are
paid per batch, not per text. A lone request runs at once: no added wait at low load.

After a run that merged several requests, the next one waits for the clients it answered to come
back, by the encoder's batcher's rule (``services.waiting.Following``), or until ``GATHER_TEXTS``
texts are queued.

A request may carry a deadline (:mod:`gateway.deadlines`): a run lasts at most until the latest
deadline among the requests it serves, so a stuck upstream holds the key's slot no longer than its
callers wait, and the requests queued behind start with the time they have left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.deadlines import Progress, RunOutOfTime, tracked
from services.waiting import Following, wait_until

Row = TypeVar("Row")

# Past this many texts a run waits for no one: a pass of 32 sentences computes at the encoder's full
# rate already (the in-process limit's batch size), and waiting for more would only idle the cores.
GATHER_TEXTS = 32


@dataclass
class _Pending:
    texts: list[str]
    context: Any
    future: asyncio.Future
    deadline: float | None  # loop time; None: no deadline
    progress: Progress | None  # the caller's, made to follow the run that serves it


class Coalescer(Generic[Row]):
    """``run(context, texts) -> (shared, rows)`` is called with the texts of every request queued under
    one key (up to ``max_texts``); each request gets ``(shared, its own rows)``. At most
    ``max_in_flight`` runs per key at once; requests arriving meanwhile wait and go together."""

    def __init__(
        self,
        run: Callable[[Any, list[str]], Awaitable[tuple[Any, list[Row]]]],
        *,
        max_texts: int,
        max_in_flight: int,
    ) -> None:
        self._run = run
        self.max_texts = max_texts
        self.max_in_flight = max_in_flight
        self._queues: dict[Hashable, deque[_Pending]] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._arrived = asyncio.Event()  # set by every submit, for the runs gathering company
        self._progress: dict[Hashable, Progress] = {}  # the upstream call each key's latest run waits on

    async def submit(
        self, key: Hashable, context: Any, texts: list[str], *, deadline: float | None = None,
        progress: Progress | None = None,
    ) -> tuple[Any, list[Row]]:
        """``deadline`` (loop time) bounds the run that serves this request; the caller bounds its own wait
        (a cancelled wait leaves the queue). ``progress`` follows the run it waits behind, then its own."""
        future = asyncio.get_running_loop().create_future()
        if progress is not None:
            progress.follows = self._progress.get(key)
        self._queues.setdefault(key, deque()).append(_Pending(list(texts), context, future, deadline, progress))
        self._arrived.set()
        if self._in_flight.get(key, 0) < self.max_in_flight:
            self._start(key)
        return await future

    def _start(self, key: Hashable) -> None:
        queue = self._queues.get(key)
        batch: list[_Pending] = []
        count = 0
        while queue and (not batch or count + len(queue[0].texts) <= self.max_texts):
            pending = queue.popleft()
            if not pending.future.done():  # its client went away
                batch.append(pending)
                count += len(pending.texts)
        if queue is not None and not queue:
            del self._queues[key]
        if not batch:
            return
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._progress[key] = progress = Progress()
        for pending in batch:
            if pending.progress is not None:
                pending.progress.follows = progress
        task = asyncio.create_task(self._flush(key, batch, progress))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def progress(self, key: Hashable) -> Progress | None:
        """What the latest run of ``key`` in flight waits on (None: no run in flight)."""
        return self._progress.get(key)

    async def _flush(self, key: Hashable, batch: list[_Pending], progress: Progress) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadlines = [p.deadline for p in batch]
        deadline = None if None in deadlines else max(d for d in deadlines if d is not None)
        try:
            with tracked(progress):
                try:
                    async with asyncio.timeout_at(deadline):  # never longer than its callers wait
                        shared, rows = await self._run(batch[-1].context, [t for p in batch for t in p.texts])
                except TimeoutError as exc:
                    raise RunOutOfTime(progress) from exc
            start = 0
            for pending in batch:
                end = start + len(pending.texts)
                if not pending.future.done():
                    pending.future.set_result((shared, rows[start:end]))
                start = end
            following = Following.after(len(batch), len(batch) + len(self._queues.get(key, ())), started, loop.time())
            if following is not None:  # concurrent clients: still in flight while they come back
                await self._follow(key, following)
        except Exception as exc:  # the same pipeline failed for all of them: each request gets the error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
                self._progress.pop(key, None)
            if key in self._queues:
                self._start(key)

    async def _follow(self, key: Hashable, following: Following) -> None:
        """Wait until ``key``'s queue holds a request from each client followed, or ``GATHER_TEXTS`` texts."""

        def enough() -> bool:
            queue = self._queues.get(key, ())
            return len(queue) >= following.clients or sum(len(p.texts) for p in queue) >= GATHER_TEXTS

        await wait_until(enough, self._arrived, following.wait_s)
