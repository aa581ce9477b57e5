"""Where forward passes compute: one lead thread, and the micro-batches of a pass side by side.

On a CPU, one micro-batch split across every core by intra-op threads pays a barrier per operator,
and for the small matrices of a sentence batch that costs more than it saves. Measured on 2 cores
with MiniLM (micro-batches of 16 sentences): 2 threads on one micro-batch at a time, 151-178
sentences/s; 2 streams of 1 thread, each on its own micro-batch, 200-225. So a pass's micro-batches
are shared out between ``streams`` threads, each with its share of the intra-op threads, and each
takes the next micro-batch as soon as it is free. A pass with a single micro-batch (one text, a lone
client) runs on the lead thread with every thread, where intra-op parallelism cuts latency.

torch's thread count is process-wide, so every pass starts on the lead thread, one at a time: the
count is switched only while no stream computes, and OpenMP keeps one team (on the lead thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


class Streams:
    def __init__(self, streams: int, threads: int) -> None:
        self.streams = max(1, min(streams, threads))
        self.threads = threads
        self.per_stream = max(1, threads // self.streams)
        self._lead = ThreadPoolExecutor(1, thread_name_prefix="encoder-forward")
        self._helpers = (
            ThreadPoolExecutor(self.streams - 1, thread_name_prefix="encoder-stream") if self.streams > 1 else None
        )
        self._threads_now = 0

    def submit(self, fn: Callable[..., R], *args) -> Future[R]:
        """Run ``fn(*args)`` on the lead thread, after the work already submitted; ``fn`` may ``map``."""
        return self._lead.submit(fn, *args)

    def alone(self, fn: Callable[..., R], *args) -> Future[R]:
        """Like ``submit``, for work that is not a pass (loading a model): with every thread."""
        return self._lead.submit(self._alone, fn, args)

    def _alone(self, fn: Callable[..., R], args: tuple) -> R:
        self._use(self.threads)
        return fn(*args)

    def map(self, fn: Callable[[T], None], chunks: Sequence[T]) -> None:
        """On the lead thread: ``fn`` on every chunk, chunks in the order given (largest first is best)."""
        if self._helpers is None or len(chunks) < 2:
            self._use(self.threads)
            for chunk in chunks:
                fn(chunk)
            return
        self._use(self.per_stream)
        pending = deque(chunks)

        def drain() -> None:
            with torch.inference_mode():  # thread-local: the helpers need their own
                while pending:
                    try:
                        chunk = pending.popleft()
                    except IndexError:  # another stream took the last one
                        return
                    try:
                        fn(chunk)
                    except BaseException:
                        pending.clear()  # the pass has failed: the other streams stop too
                        raise

        helpers = [self._helpers.submit(drain) for _ in range(min(self.streams, len(chunks)) - 1)]
        try:
            drain()
        finally:  # never return (or raise) while a helper still computes: the next pass may switch threads
            errors = [f.exception() for f in helpers]
        for error in errors:
            if error is not None:
                raise error

    def _use(self, threads: int) -> None:
        if threads != self._threads_now:
            torch.set_num_threads(threads)
            self._threads_now = threads

    def shutdown(self) -> None:
        self._lead.shutdown(wait=True)
        if self._helpers is not None:
            self._helpers.shutdown(wait=True)
