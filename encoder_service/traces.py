"""The encoder's spans (services.tracing; nothing here runs while tracing is off).

A forward pass serves many requests, so its span is parented to none of them: it starts a trace of
its own, linked to the span of every request it served, with the batch's size and tokens. Each
request's trace gets a ``queue wait`` span, from the moment its texts were queued to the start of the
pass that took them, naming that pass's size and tokens too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services import tracing


@dataclass(frozen=True)
class Queued:
    """Where a request was when its texts were queued: its span, and the time (ns, for the span's start)."""

    context: Any
    at_ns: int


class _Job(Protocol):
    trace: Queued | None
    request: int

    @property
    def item(self) -> Any: ...


def queued() -> Queued | None:
    context = tracing.current_context()
    return Queued(context, time.time_ns()) if context is not None else None


def forward_pass(batch: Sequence[_Job]) -> Any:
    """The span of one pass over ``batch`` (a context manager); the queue-wait spans of its requests are
    recorded on the way in."""
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan

    tokens = sum(job.item.n_tokens for job in batch)
    started = time.time_ns()
    served: dict[int, Queued] = {}
    for job in batch:
        if job.trace is not None and job.request not in served:
            served[job.request] = job.trace
    attributes = {"seam.batch.size": len(batch), "seam.batch.tokens": tokens, "seam.batch.requests": len({j.request for j in batch})}
    for request in served.values():
        parent = trace.set_span_in_context(NonRecordingSpan(request.context))
        wait = tracing.tracer.start_span("queue wait", context=parent, start_time=request.at_ns, attributes={
            **attributes, "seam.queue.wait_ms": round((started - request.at_ns) / 1e6, 3)})
        wait.end(end_time=started)
    links = [Link(request.context) for request in served.values()]
    # A root span: parented to no request (the batcher's task has no current span).
    return tracing.tracer.start_as_current_span("forward pass", context=trace.set_span_in_context(trace.INVALID_SPAN),
                                                links=links, attributes=attributes, start_time=started)
