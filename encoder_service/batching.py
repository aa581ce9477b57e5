"""Dynamic batching: requests from many clients share forward passes.

Requests come through ``encode``: their texts are tokenized (short ones at once, longer ones in a
worker thread, in parallel, never behind a forward pass) and queued here. One worker takes queued
texts up to a token budget and hands them to the runtime as one forward pass, which length-sorts
them so little padding is computed. Before each pass the worker waits for company when there is
some to be had: requests being tokenized (up to ``max_wait_ms``), or the concurrent clients the last
pass answered, coming back (``services.waiting.Following``); a lone client never waits. A full queue
refuses new work with 429 instead of growing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import numpy as np

from encoder_service import traces
from encoder_service.runtime import EncoderRuntime, TokenizedText
from services import tracing
from encoder_service.settings import EncoderSettings
from services.errors import NotReady, Overloaded
from services.waiting import Following, wait_until

log = logging.getLogger("seam.encoder.batching")

# Requests with at most this many characters are tokenized on the event loop (tens of microseconds),
# which is cheaper than the round trip to a worker thread; longer ones go to a thread.
INLINE_TOKENIZE_CHARS = 512
# Clients count as concurrent for this long after a pass that several requests shared.
COMPANY_HORIZON_S = 1.0


@dataclass
class _Job:
    item: TokenizedText
    output: str
    future: asyncio.Future
    request: int  # which submit it came from
    trace: traces.Queued | None = None  # tracing on: the request's span, to link the pass to
    float32: bool = False  # computed in float32 on request: never in one pass with the others


class Batcher:
    def __init__(self, runtime: EncoderRuntime, settings: EncoderSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()  # set when texts are queued or an arriving request gives up
        self._arriving = 0  # requests being tokenized: their texts are about to be queued
        self._submits = 0
        self._following: Following | None = None  # the clients the last pass answered, when it held several
        self._task: asyncio.Task | None = None
        self.batches_run = 0
        self.on_batch: Callable[[list[TokenizedText]], None] | None = None  # told each batch run (metrics)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="encoder-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(NotReady("the encoder is shutting down; retry on another replica"))
        self._queue.clear()

    async def encode(
        self, texts: list[str], output: str, check: Callable[[list[TokenizedText]], None] | None = None,
        float32: bool = False,
    ) -> tuple[list[TokenizedText], list[np.ndarray]]:
        """Tokenize ``texts`` and queue them; their tokenization and one array per text, in order.
        ``check`` sees the tokenization first and may refuse it (a JSON answer too large, say) before
        any forward pass runs. ``float32``: computed in float32 whatever the served precision."""
        self._arriving += 1
        try:
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                items = self.runtime.tokenize(texts)
            else:
                items = await anyio.to_thread.run_sync(self.runtime.tokenize, texts)
        finally:
            self._arriving -= 1
            self._wakeup.set()
        if check is not None:
            check(items)
        return items, await self.submit(items, output, float32)

    async def submit(self, items: list[TokenizedText], output: str, float32: bool = False) -> list[np.ndarray]:
        """Queue tokenized texts; resolves to one array per text, in order."""
        if len(self._queue) + len(items) > self.settings.max_queue:
            raise Overloaded(
                f"{len(self._queue)} texts are already waiting for the model (limit {self.settings.max_queue}); "
                "retry shortly or send fewer texts",
                retry_after=1,
                queue_depth=len(self._queue),
            )
        loop = asyncio.get_running_loop()
        self._submits += 1
        queued = traces.queued() if tracing.tracer is not None else None
        jobs = [_Job(item, output, loop.create_future(), self._submits, trace=queued, float32=float32) for item in items]
        self._queue.extend(jobs)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        except asyncio.CancelledError:
            for job in jobs:  # the client went away: drop its texts that have not run yet
                job.future.cancel()
            raise

    def _take(self) -> list[_Job]:
        """The oldest queued texts, up to the token budget, computed in the same precision as the oldest:
        texts asked in the other wait, in their order, for the next pass (a few float32 texts among
        many do not cut the others' passes into pieces)."""
        budget, batch, tokens, passed = self.settings.max_batch_tokens, [], 0, deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # cancelled while waiting
                continue
            if batch and job.float32 != batch[0].float32:
                passed.append(job)
                continue
            if batch and tokens + job.item.n_tokens > budget:
                self._queue.appendleft(job)
                break
            batch.append(job)
            tokens += job.item.n_tokens
        if passed:  # ahead of the rest, in their order
            passed.extend(self._queue)
            self._queue = passed
        return batch

    async def _gather(self) -> None:
        """Before a pass: wait for company when there is some to be had, unless the queued texts
        fill the token budget already. A lone client never waits.

        - Requests being tokenized are about to add texts: up to ``max_wait_ms``.
        - Clients are concurrent (the last pass, ended under ``COMPANY_HORIZON_S`` ago, held texts of
          several requests): the clients it answered are followed (``services.waiting.Following``),
          and at least ``max_wait_ms``."""
        loop = asyncio.get_running_loop()
        following = self._following
        if following is not None and loop.time() - following.ended >= COMPANY_HORIZON_S:
            following = None
        wait_s = self.settings.max_wait_ms / 1000
        if following is not None:
            wait_s = max(wait_s, following.wait_s)

        def enough() -> bool:
            if not (self._arriving or following):
                return True
            if sum(job.item.n_tokens for job in self._queue) >= self.settings.max_batch_tokens:
                return True
            return following is not None and len({job.request for job in self._queue}) >= following.clients

        await wait_until(enough, self._wakeup, wait_s)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                await self._wakeup.wait()
                self._wakeup.clear()
            await self._gather()
            batch = self._take()
            if batch:
                await self._pass(batch)

    async def _pass(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        wants = sorted({job.output for job in batch})
        requests = {job.request for job in batch}
        started = loop.time()
        items, float32 = [job.item for job in batch], batch[0].float32
        try:
            if tracing.tracer is None:
                results = await asyncio.wrap_future(self.runtime.submit(items, wants, float32))
            else:
                with traces.forward_pass(batch):
                    results = await asyncio.wrap_future(self.runtime.submit(items, wants, float32))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            log.exception("forward pass failed for a batch of %d texts", len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.batches_run += 1
        self._following = Following.after(len(requests), len(requests | {job.request for job in self._queue}),
                                          started, loop.time())
        if self.on_batch is not None:
            self.on_batch(items)
        for job, result in zip(batch, results):
            if not job.future.done():
                job.future.set_result(result[job.output])
