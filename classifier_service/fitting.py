"""Training, and the worker processes it runs in.

A fit is plain computation that a thread cannot interrupt (an ``mlp`` with ``max_iter`` 1e9 runs for
ever). So each fit runs in a worker process, bounded by ``CLASSIFIER_FIT_TIMEOUT_S``: past it the
worker is killed, its slot freed, and the caller told so. Workers are forked from a ``forkserver``
that has imported scikit-learn and torch once, and a worker is kept warm for the next fit, so a fit
costs a round trip of its data, not a Python start. The worker only trains: the fitted model comes
back to the service, which saves it (the store's atomic writes stay in one place) and serves it.

Training itself (:func:`classifier_service.training.train`) refuses a degenerate fit: a model whose probabilities on its own
training rows are not finite (``gaussian_nb`` on identical rows divides by a zero variance) is a
422 at fit time, not NaN at every prediction.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import threading
import time
from multiprocessing.connection import Connection

from classifier_service import heads
from classifier_service.training import FitJob, Trained
from services import errors
from services.errors import FitTimedOut, InvalidInput, SeamError

log = logging.getLogger("seam.classifier.fitting")

def _orphan_watch(lifeline: Connection) -> None:
    """Ends the worker, even in the middle of a fit, once the service is gone: nothing is ever sent
    on ``lifeline``, so it becomes readable only when the service's end closes (it stopped this
    worker, or it died). A killed service leaves no fit running."""
    lifeline.poll(None)
    os._exit(1)


def _serve(conn: Connection, lifeline: Connection, torch_threads: int | None) -> None:
    """A worker's loop: a job in, ``("ok", Trained)`` or a refusal out, until the pipe closes."""
    from classifier_service.training import train

    threading.Thread(target=_orphan_watch, args=(lifeline,), name="seam-fit-orphan-watch", daemon=True).start()
    heads.use_threads(torch_threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple = ("ok", train(job))
        except SeamError as exc:
            answer = ("refused", type(exc).__name__, exc.detail, exc.extra)
        except Exception as exc:  # reported to the service, which logs it and answers 500
            answer = ("failed", f"{type(exc).__name__}: {exc}")
        conn.send(answer)


# -- workers (in the service) ---------------------------------------------------------------------


class FitWorkerDied(SeamError):
    """A fit worker ended without answering (killed by the OS, out of memory)."""


_start_lock = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server importing this module (scikit-learn, torch) once."""
    context = multiprocessing.get_context("forkserver")
    with _start_lock:
        context.set_forkserver_preload([__name__])
    return context


def start_server() -> None:
    """Starts the forkserver (it imports scikit-learn and torch: seconds), so that the first fit
    does not wait for it. Idempotent; call it from a background thread."""
    _context()
    multiprocessing.forkserver.ensure_running()


class _Worker:
    def __init__(self, torch_threads: int | None) -> None:
        context = _context()
        self.conn, child = context.Pipe()
        lifeline, self._lifeline = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_serve, args=(child, lifeline, torch_threads), name="seam-fit-worker", daemon=True
        )
        self.process.start()
        child.close()
        lifeline.close()

    def stop(self) -> None:
        self.conn.close()
        self._lifeline.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class FitWorkers:
    """Up to ``size`` warm worker processes; :meth:`run` trains a job in one, within ``timeout_s``."""

    def __init__(self, size: int, *, timeout_s: float, torch_threads: int | None) -> None:
        self.size, self.timeout_s, self.torch_threads = size, timeout_s, torch_threads
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def warm(self) -> None:
        """Readies the forkserver in the background: the service answers meanwhile."""
        threading.Thread(target=start_server, name="seam-fit-warmup", daemon=True).start()

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise errors.NotReady("The classifier is shutting down.")
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.process.is_alive():
            worker = _Worker(self.torch_threads)
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = healthy and not self._closed and len(self._idle) < self.size
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.stop()

    def run(self, job: FitJob) -> Trained:
        """Trains ``job`` in a worker. Past ``timeout_s`` the worker is killed (a fresh one serves the
        next fit) and :class:`FitTimedOut` raised; a refusal in the worker is raised here as itself."""
        worker = self._take()
        healthy = False
        started = time.monotonic()
        try:
            try:
                worker.conn.send(dataclasses.replace(job, retained=None))  # texts stay in the service
                answered = worker.conn.poll(max(0.0, self.timeout_s - (time.monotonic() - started)))
                answer = worker.conn.recv() if answered else None
            except (EOFError, OSError) as exc:
                raise FitWorkerDied(
                    f"The fit worker ended without an answer ({type(exc).__name__}); it may have run out of memory. "
                    "Nothing was saved."
                ) from exc
            if answer is None:
                raise FitTimedOut(
                    f"The fit of {job.name!r} ({job.estimator.name}, {len(job.labels)} rows) ran longer than "
                    f"{self.timeout_s:g} s (CLASSIFIER_FIT_TIMEOUT_S) and was stopped; nothing was saved. Fit with "
                    "fewer rows or iterations (max_iter, max_epochs) or smaller layers, or raise CLASSIFIER_FIT_TIMEOUT_S.",
                    timeout_s=self.timeout_s,
                )
            healthy = True
        finally:
            self._give_back(worker, healthy=healthy)
        kind, *rest = answer
        if kind == "ok":
            return rest[0]
        if kind == "refused":
            name, detail, extra = rest
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, SeamError) and cls is not errors.Overloaded:
                raise cls(detail, **extra)
            raise InvalidInput(detail, **extra)
        raise RuntimeError(f"the fit of {job.name!r} failed in its worker: {rest[0]}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for worker in workers:
            worker.stop()
