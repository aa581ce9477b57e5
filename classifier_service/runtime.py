"""The classifier runtime: fitted models in memory, backed by the store. No HTTP here.

It keeps the models in line with the store (versions another process wrote appear, damaged ones are
reported and refused by number, and "latest" never skips one), predicts, and fits. Reading one version
and predicting with it is :mod:`classifier_service.loaded`'s; the checks a fit request passes before
any training, :mod:`classifier_service.fit_request`'s.

Fits are handed by a dedicated thread pool (``fit_workers`` threads) to worker processes
(:mod:`classifier_service.fitting`), bounded by ``fit_timeout_s``; predictions run in anyio's worker
threads, so the event loop never computes and predictions keep being served while a fit runs. A fit
whose model gives non-finite probabilities on its own training rows is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np

from classifier_service import features as feature_checks
from classifier_service import heads
from classifier_service import retained as retained_data
from classifier_service.aliases import open_aliases
from classifier_service.estimator_types import CLASSIFICATION
from classifier_service.fit_request import prepare_fit
from classifier_service.fitting import FitWorkers
from classifier_service.loaded import LoadedVersion, PredictionResult, load_version
from classifier_service.ood import METHOD as OOD_METHOD
from classifier_service.schemas import FitInput, Metrics, PredictInput, VersionRecord
from classifier_service.settings import ClassifierSettings
from classifier_service.store import Skipped, StoreEntryError, open_store
from classifier_service.training import FitJob, Trained
from services.errors import DamagedVersion, ModelNotFound, Overloaded

log = logging.getLogger("seam.classifier")

T = TypeVar("T")

# A light model (scikit-learn) predicts this many rows in less time than the round trip to a worker
# thread and back costs: such predictions run on the event loop.
INLINE_PREDICT_ROWS = 64


class ClassifierRuntime:
    """Named, versioned models: load them from the store, fit new versions, predict."""

    def __init__(self, settings: ClassifierSettings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.aliases = open_aliases(self.store)
        self.ready = False
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._skipped: dict[str, Skipped] = {}
        self._lock = threading.RLock()
        self._fit_pool = ThreadPoolExecutor(settings.fit_workers, thread_name_prefix="seam-fit")
        self._workers = FitWorkers(settings.fit_workers, timeout_s=settings.fit_timeout_s, torch_threads=settings.torch_threads)
        self._pending_fits = 0

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Loads every stored version; a corrupt or foreign entry is reported and skipped."""
        heads.use_threads(self.settings.torch_threads)
        if self.settings.fit_warmup:
            self._workers.warm()
        self.store.prepare()
        for leftover in self.store.remove_leftovers(self.settings.stale_temp_seconds):
            log.info("removed %s, left by an interrupted save or delete", leftover)
        with self._lock:
            self._models.clear()
            self._skipped.clear()
            for name in self._scan_top():
                self._refresh(name)
        self.ready = True
        versions = sum(len(v) for v in self._models.values())
        log.info("store %s: %d models, %d versions, %d skipped", self.store.location, len(self._models), versions, len(self._skipped))

    def _skip(self, entry: Skipped, *, known: bool = False) -> None:
        if not known:
            log.warning("store entry %s skipped: %s", entry.path, entry.reason)
        self._skipped[entry.path] = entry

    def _scan_top(self) -> list[str]:
        """Model names on disk; foreign entries beside them are (re)reported."""
        names, foreign = self.store.names()
        before = {p for p in self._skipped if "/" not in p}
        for path in before:
            del self._skipped[path]
        for entry in foreign:
            self._skip(entry, known=entry.path in before)
        return names

    def _refresh(self, name: str) -> dict[int, LoadedVersion]:
        """Brings ``name`` in line with the disk: versions written by another process appear, a model
        deleted by another process disappears, skipped entries that are gone leave the report. One
        directory listing when nothing changed."""
        with self._lock:
            numbers, foreign = self.store.versions(name)
            before = {p: s for p, s in self._skipped.items() if p.startswith(f"{name}/")}
            for path in before:
                del self._skipped[path]
            for entry in foreign:
                self._skip(entry, known=entry.path in before)
            known = self._models.get(name, {})
            current = {v: known[v] for v in numbers if v in known}
            for version in numbers:
                if version in current:
                    continue
                path = f"{name}/{version}"
                identity = self.store.identity(name, version)
                if path in before and before[path].identity == identity:
                    self._skipped[path] = before[path]  # the same broken directory: not read again
                    continue
                try:
                    current[version] = load_version(self.store, name, version)
                except StoreEntryError as exc:
                    self._skip(Skipped(path, str(exc), identity, version))
            if current:
                self._models[name] = current
            else:
                self._models.pop(name, None)
            return current

    # -- reading ---------------------------------------------------------------------------------

    @property
    def model_count(self) -> int:
        return len(self._models)

    @property
    def skipped(self) -> list[Skipped]:
        with self._lock:
            return sorted(self._skipped.values(), key=lambda s: s.path)

    def damaged(self, name: str) -> dict[int, str]:
        """Versions of ``name`` on disk whose files are damaged, and why (as of the last refresh)."""
        with self._lock:
            return {
                s.version: s.reason for p, s in self._skipped.items() if s.version is not None and p.startswith(f"{name}/")
            }

    def list_models(self) -> list[tuple[str, dict[int, LoadedVersion], dict[int, str]]]:
        """Every model, re-read from the store's listing (other processes may share it): its loaded
        versions and its damaged ones."""
        with self._lock:
            names = self._scan_top()
            found = [(name, self._refresh(name), self.damaged(name)) for name in sorted(set(names) | set(self._models))]
        return [(name, versions, damaged) for name, versions, damaged in found if versions or damaged]

    def versions(self, name: str) -> dict[int, LoadedVersion]:
        """The loaded versions of ``name`` (none when all are damaged); 404 when it has no version at all."""
        versions = self._refresh(name)
        if not versions and not self.damaged(name):
            raise ModelNotFound(f"No model named {name!r}.", name=name)
        return versions

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        """A version by number, or the latest: the highest number on disk. A damaged one is refused
        (409 naming it and why), never replaced by another version."""
        versions = self.versions(name)
        damaged = self.damaged(name)
        wanted = max([*versions, *damaged]) if version is None else version
        if wanted in damaged:
            which = f"The latest version of model {name!r}, version {wanted}," if version is None else (
                f"Version {wanted} of model {name!r}")
            fallback = (" No older version is served in its place." if version is None else "")
            raise DamagedVersion(
                f"{which} is damaged: {damaged[wanted]}.{fallback} Restore its files, or delete the model "
                f"(DELETE /v1/models/{name}) and fit it again; versions that load: {sorted(versions) or 'none'} "
                "(ask for one with ?version=N).",
                name=name, version=wanted, reason=damaged[wanted], versions=sorted(versions),
            )
        if wanted not in versions:
            raise ModelNotFound(
                f"Model {name!r} has no version {version}; it has {sorted(versions)}.",
                name=name, version=version, versions=sorted(versions),
            )
        return versions[wanted]

    def retained(self, name: str, version: int, what: str) -> dict[str, Any]:
        """A version's kept training data (``training``) or reference sample (``reference``); NoRetainedData
        when it kept none."""
        record = self.get(name, version).record
        filename = retained_data.REFERENCE_FILE if what == "reference" else retained_data.TRAINING_FILE
        data = retained_data.read(self.store.read(name, version).folder, filename, name=name, version=version,
                                  summary=record.retained)
        return {"name": name, "version": version, **data}

    def delete(self, name: str) -> None:
        with self._lock:
            removed = self.store.delete(name)
            self.aliases.drop(name)  # a new model of the same name starts with no aliases
            self._refresh(name)
        if not removed:
            raise ModelNotFound(f"No model named {name!r}.", name=name)

    # -- predicting ------------------------------------------------------------------------------

    def predict_sync(self, name: str, version: int | None, request: PredictInput) -> PredictionResult:
        loaded = self.get(name, version)
        record = loaded.record
        consumer = f"model {name!r} version {record.version}"
        contract = record.input_contract
        about = {"name": name, "version": record.version}
        tensor = feature_checks.decode(request.features, contract, subject="features", consumer=consumer, **about)
        feature_checks.validate(
            tensor, contract, subject="features", consumer=consumer, max_rows=self.settings.max_predict_rows,
            declared=request.fields.contract, **about,
        )
        outputs, ood = loaded.outputs(tensor)
        return PredictionResult(name, record.version, record.classes, outputs, record.task, ood)

    def predicts_inline(self, name: str, version: int | None, request: PredictInput) -> bool:
        """Whether ``predict_sync`` may run on the event loop: a light version already in memory and at
        most ``INLINE_PREDICT_ROWS`` rows. The torch head, a version still to be read from disk and
        larger batches go to a worker thread. On the loop, ``get`` still lists the model's directory
        (tens of microseconds), and reads a version another process has just added, once."""
        versions = self._models.get(name)
        if not versions:
            return False
        loaded = versions.get(max(versions) if version is None else version)
        try:
            rows = len(request.features)
        except TypeError:  # not rows at all: predict_sync refuses it, in the thread
            return False
        return loaded is not None and loaded.estimator.light and rows <= INLINE_PREDICT_ROWS

    async def run_predict(self, name: str, version: int | None, request: PredictInput, job: Callable[[], T]) -> T:
        """``job`` (predicting ``request``, and whatever goes with it) on the event loop where
        ``predicts_inline`` allows, in a worker thread otherwise."""
        if self.predicts_inline(name, version, request):
            return job()
        return await anyio.to_thread.run_sync(job)

    async def predict(self, name: str, version: int | None, request: PredictInput) -> PredictionResult:
        return await self.run_predict(name, version, request, lambda: self.predict_sync(name, version, request))

    # -- fitting ---------------------------------------------------------------------------------

    async def fit(self, name: str, request: FitInput) -> VersionRecord:
        """Checks the request (worker thread), then fits and saves (fit pool). 429 when too many wait."""
        if self._pending_fits >= self.settings.max_pending_fits:
            raise Overloaded(f"{self._pending_fits} fits are running or waiting; retry later.", retry_after=5)
        self._pending_fits += 1
        try:
            job = await anyio.to_thread.run_sync(prepare_fit, name, request, self.settings)
            return await asyncio.get_running_loop().run_in_executor(self._fit_pool, self.run_fit, job)
        finally:
            self._pending_fits -= 1

    def run_fit(self, job: FitJob) -> VersionRecord:
        """Trains (in a worker process), saves a new version and serves it. Runs in the fit pool."""
        trained = self._train(job)
        record = VersionRecord(
            name=job.name, version=0, estimator=job.estimator.name, params=job.params, input_contract=job.contract,
            source=job.source, task=job.task, classes=trained.classes, preprocess=job.preprocess,
            calibrate=job.calibrate, metrics=Metrics(**trained.metrics), data_sha256=job.data_sha256,
            ood={"method": OOD_METHOD, "groups": len(trained.ood.centroids), "quantiles": len(trained.ood.distances)},
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        loaded = LoadedVersion(record, job.estimator, trained.model, trained.preprocessor, trained.calibrator, trained.ood)
        keep = job.retained
        if keep is not None:  # the reference sample, with the probabilities this version gives it now
            # (a regressor keeps its texts for refits; measured acceptance compares labels, so no sample)
            size = keep.reference_size if job.task == CLASSIFICATION else 0
            rows = retained_data.reference_rows(job.labels, size)
            reference = (loaded.predict_proba(feature_checks.take(job.features, rows))
                         if len(rows) else np.zeros((0, len(record.classes))))
            record = record.model_copy(update={"retained": {"texts": len(keep.texts), "reference_sample": len(rows)}})

        def write_artifacts(folder: Path) -> None:
            trained.save(job.estimator, folder)
            if keep is not None:
                retained_data.write(folder, keep, job.labels, rows, record.classes, reference)

        stored = record.model_dump(mode="json", exclude={"name", "version"})
        version = self.store.save(job.name, stored, write_artifacts)
        record = record.model_copy(update={"version": version})
        loaded = dataclasses.replace(loaded, record=record)
        with self._lock:
            self._models.setdefault(job.name, {})[version] = loaded
        log.info("fitted %s version %d (%s, %d rows)", job.name, version, job.estimator.name, len(job.labels))
        return record

    def _train(self, job: FitJob) -> Trained:
        """The fitted version (model, preprocessing, calibration, OOD summary, metrics), from a worker
        process within ``fit_timeout_s``."""
        return self._workers.run(job)

    def close(self) -> None:
        self._fit_pool.shutdown(wait=False, cancel_futures=True)
        self._workers.close()
