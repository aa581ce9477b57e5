"""Dynamic batching: requests from many clients share forward passes.

Texts are tokenized by the request handlers (off the event loop, in parallel) and queued here.
One worker takes queued texts up to a token budget, waiting ``max_wait_ms`` for company only when
it was idle, and runs the forward pass on a single dedicated thread; the runtime length-sorts the
batch so little padding is computed. A full queue refuses new work with 429 instead of growing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from encoder_service.runtime import EncoderRuntime, TokenizedText
from encoder_service.settings import EncoderSettings
from services.errors import NotReady, Overloaded

log = logging.getLogger("seam.encoder.batching")


@dataclass
class _Job:
    item: TokenizedText
    output: str
    future: asyncio.Future


class Batcher:
    def __init__(self, runtime: EncoderRuntime, settings: EncoderSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder-forward")
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
        self._executor.shutdown(wait=True)

    async def submit(self, items: list[TokenizedText], output: str) -> list[np.ndarray]:
        """Queue tokenized texts; resolves to one array per text, in order."""
        if len(self._queue) + len(items) > self.settings.max_queue:
            raise Overloaded(
                f"{len(self._queue)} texts are already waiting for the model (limit {self.settings.max_queue}); "
                "retry shortly or send fewer texts",
                retry_after=1,
                queue_depth=len(self._queue),
            )
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, output, loop.create_future()) for item in items]
        self._queue.extend(jobs)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        except asyncio.CancelledError:
            for job in jobs:  # the client went away: drop its texts that have not run yet
                job.future.cancel()
            raise

    def _take(self) -> list[_Job]:
        budget, batch, tokens = self.settings.max_batch_tokens, [], 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # cancelled while waiting
                self._queue.popleft()
                continue
            if batch and tokens + job.item.n_tokens > budget:
                break
            batch.append(self._queue.popleft())
            tokens += job.item.n_tokens
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.settings.max_wait_ms / 1000
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if wait and sum(j.item.n_tokens for j in self._queue) < self.settings.max_batch_tokens:
                await asyncio.sleep(wait)  # idle until now: give concurrent requests a moment to join
            while self._queue:
                batch = self._take()
                if not batch:
                    break
                wants = sorted({job.output for job in batch})
                try:
                    results = await loop.run_in_executor(
                        self._executor, self.runtime.forward, [job.item for job in batch], wants
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    log.exception("forward pass failed for a batch of %d texts", len(batch))
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.batches_run += 1
                if self.on_batch is not None:
                    self.on_batch([job.item for job in batch])
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result[job.output])
