"""Per-caller deadlines: a predict is answered within ``GATEWAY_TIMEOUT_S`` of its own arrival, however
many requests queue behind a stuck upstream.

Without them a caller's time ran per upstream call, not per request: with the encoder paused, the
requests of one pipeline waited for the merged run in flight to time out, then ran (and timed out)
in the next one, answered after 30, 60, 90 s. Now each request carries one deadline from arrival
to answer; a merged run lasts at most as long as the latest deadline among the requests it serves
(:mod:`gateway.coalescing`), so it never outlives its callers.

A request out of time says what it was waiting for: every upstream call notes its upstream and stage
in the :class:`Progress` of the task that makes it (a context variable), the caller's own task or
the merged run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from services.errors import UpstreamTimeout


@dataclass
class Progress:
    """The upstream call a task waits on (or waited on last). A request handed to a merged run
    ``follows`` that run's progress (or, while queued, the progress of the run it waits behind)."""

    upstream: str | None = None
    stage: str | None = None
    follows: Progress | None = None

    def current(self) -> Progress:
        """Where the request waits now: the run it follows, once that run has called an upstream."""
        return self.follows if self.follows is not None and self.follows.stage else self


_CURRENT: ContextVar[Progress | None] = ContextVar("seam_gateway_progress", default=None)


def note(upstream: str, stage: str) -> None:
    """Called by every upstream call: the task tracking its progress now waits on ``upstream`` at ``stage``."""
    progress = _CURRENT.get()
    if progress is not None:
        progress.upstream, progress.stage = upstream, stage


@contextmanager
def tracked(progress: Progress) -> Iterator[Progress]:
    """Upstream calls made by this task (and by tasks it starts) inside the block note into ``progress``."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)


class RunOutOfTime(TimeoutError):
    """A merged run passed the latest deadline of its requests; ``progress`` says where it waited."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(progress.stage)
        self.progress = progress


def out_of_time(progress: Progress, limit_s: float) -> UpstreamTimeout:
    """The 504 of a request whose deadline passed, naming the upstream and stage it waited on."""
    progress = progress.current()
    upstream = progress.upstream or "an upstream"
    stage = progress.stage or "before any upstream call"
    return UpstreamTimeout(
        f"{upstream} did not answer within {limit_s:g}s of this request's arrival ({stage}); "
        "raise GATEWAY_TIMEOUT_S if it is merely slow",
        upstream=upstream, stage=stage,
    )
