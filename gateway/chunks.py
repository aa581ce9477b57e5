"""Work in chunks: a training set, an evaluation set or a reference sample is sent to the upstreams
in slices (``GATEWAY_TRAIN_CHUNK_SIZE``, ``GATEWAY_MAX_TEXTS``), a few at once, and the tensors that
come back are joined in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np

from services.codecs import Ragged, Tensor

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def gather(jobs: list[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the jobs with at most ``limit`` in flight; their results in order. One failed job fails the
    whole with its own error (an upstream's 413, 503, 504...), not an ExceptionGroup's 500."""
    slots = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await job()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(job)) for job in jobs]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def concat(tensors: Sequence[Tensor]) -> Tensor:
    """Tensors of consecutive rows, joined (dense or ragged alike)."""
    if len(tensors) == 1:
        return tensors[0]
    if isinstance(tensors[0], Ragged):
        return Ragged(np.concatenate([t.values for t in tensors]), np.concatenate([t.lengths for t in tensors]))
    return np.concatenate(tensors, axis=0)


def width(tensor: Tensor) -> int:
    return tensor.dim if isinstance(tensor, Ragged) else int(tensor.shape[1])
