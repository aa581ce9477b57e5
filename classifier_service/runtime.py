"""The classifier runtime: fitted models in memory, backed by the store. No HTTP here.

Fits run in a dedicated thread pool (``fit_workers`` threads) and predictions in anyio's worker
threads, so the event loop never computes and predictions keep being served while a fit runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
from pydantic import ValidationError
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold

from classifier_service import features as feature_checks
from classifier_service import heads
from classifier_service import retained as retained_data
from classifier_service.aliases import AliasStore
from classifier_service.estimators import ESTIMATORS, Estimator, resolve
from classifier_service.schemas import FitInput, Metrics, PredictInput, VersionRecord
from classifier_service.settings import ClassifierSettings
from classifier_service.store import ModelStore, Skipped, StoreEntryError
from services.codecs import Tensor
from services.contracts import TensorContract
from services.errors import InvalidInput, ModelNotFound, Overloaded, PayloadTooLarge

log = logging.getLogger("seam.classifier")

T = TypeVar("T")

MAX_CV_FOLDS = 5
# A light model (scikit-learn) predicts this many rows in less time than the round trip to a worker
# thread and back costs: such predictions run on the event loop. Measured here: the 1-row predict
# route in-process, 0.52-0.65 ms inline against 0.90-1.02 ms through the thread; a lone text through
# the gateway, four runs of alternating rounds against a classifier without it, -0.9, -0.1, +0.3 and
# -0.8 ms at p50 (about 450 requests each way per run).
INLINE_PREDICT_ROWS = 64
_CV_SEED = 0


@dataclass(frozen=True)
class LoadedVersion:
    """One fitted version, ready to predict."""

    record: VersionRecord
    estimator: Estimator
    model: Any

    def predict_proba(self, features: Tensor) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self.estimator.prepare(features)), dtype=np.float64)


@dataclass(frozen=True)
class PredictionResult:
    name: str
    version: int
    classes: list[str]
    probabilities: np.ndarray


@dataclass
class _FitJob:
    name: str
    estimator: Estimator
    params: dict[str, Any]
    contract: TensorContract
    source: dict[str, Any] | None
    features: Tensor
    labels: np.ndarray
    data_sha256: str
    retained: retained_data.Retained | None = None


def _accuracy(model: Any, X: Any, y: np.ndarray) -> float:
    classes = np.asarray(model.classes_)
    return float((classes[np.asarray(model.predict_proba(X)).argmax(axis=1)] == y).mean())


class ClassifierRuntime:
    """Named, versioned models: load them from the store, fit new versions, predict."""

    def __init__(self, settings: ClassifierSettings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.store)
        self.aliases = AliasStore(settings.store)
        self.ready = False
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._skipped: dict[str, Skipped] = {}
        self._lock = threading.RLock()
        self._fit_pool = ThreadPoolExecutor(settings.fit_workers, thread_name_prefix="seam-fit")
        self._pending_fits = 0

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Loads every stored version; a corrupt or foreign entry is reported and skipped."""
        heads.use_threads(self.settings.torch_threads)
        self.store.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.store.remove_leftovers(self.settings.stale_temp_seconds):
            log.info("removed %s, left by an interrupted save or delete", leftover)
        with self._lock:
            self._models.clear()
            self._skipped.clear()
            for name in self._scan_top():
                self._refresh(name)
        self.ready = True
        versions = sum(len(v) for v in self._models.values())
        log.info("store %s: %d models, %d versions, %d skipped", self.store.root, len(self._models), versions, len(self._skipped))

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
                    current[version] = self._load_version(name, version)
                except StoreEntryError as exc:
                    self._skip(Skipped(path, str(exc), identity))
            if current:
                self._models[name] = current
            else:
                self._models.pop(name, None)
            return current

    def _load_version(self, name: str, version: int) -> LoadedVersion:
        stored = self.store.read(name, version)
        try:
            record = VersionRecord.model_validate({**stored.record, "name": name, "version": version})
        except ValidationError as exc:
            raise StoreEntryError(f"the manifest's record is invalid: {exc.error_count()} error(s), first: {exc.errors()[0]['msg']}") from exc
        estimator = ESTIMATORS.get(record.estimator)
        if estimator is None or record.input_contract.kind not in estimator.kinds:
            raise StoreEntryError(f"unknown estimator {record.estimator!r} for {record.input_contract.kind} features")
        try:
            model = estimator.load(stored.folder)
        except StoreEntryError:
            raise
        except Exception as exc:  # a damaged artifact fails in many ways; none may stop the service
            raise StoreEntryError(f"{record.estimator} artifacts could not be loaded ({type(exc).__name__}: {exc})") from exc
        if [str(c) for c in model.classes_] != record.classes:
            raise StoreEntryError("the model's classes differ from the manifest's")
        return LoadedVersion(record, estimator, model)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def model_count(self) -> int:
        return len(self._models)

    @property
    def skipped(self) -> list[Skipped]:
        with self._lock:
            return sorted(self._skipped.values(), key=lambda s: s.path)

    def list_models(self) -> list[tuple[str, dict[int, LoadedVersion]]]:
        """Every model, re-read from the store's listing (other processes may share it)."""
        with self._lock:
            names = self._scan_top()
            found = [(name, self._refresh(name)) for name in sorted(set(names) | set(self._models))]
        return [(name, versions) for name, versions in found if versions]

    def versions(self, name: str) -> dict[int, LoadedVersion]:
        versions = self._refresh(name)
        if not versions:
            raise ModelNotFound(f"No model named {name!r}.", name=name)
        return versions

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        versions = self.versions(name)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise ModelNotFound(
                f"Model {name!r} has no version {version}; it has {sorted(versions)}.",
                name=name, version=version, versions=sorted(versions),
            )
        return versions[version]

    def retained(self, name: str, version: int, what: str) -> dict[str, Any]:
        """A version's kept training data (``training``) or reference sample (``reference``); NoRetainedData
        when it kept none."""
        record = self.get(name, version).record
        filename = retained_data.REFERENCE_FILE if what == "reference" else retained_data.TRAINING_FILE
        data = retained_data.read(self.store.root / name / str(version), filename, name=name, version=version,
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
        probabilities = loaded.predict_proba(tensor)
        return PredictionResult(name, record.version, record.classes, probabilities)

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
            job = await anyio.to_thread.run_sync(self.prepare_fit, name, request)
            return await asyncio.get_running_loop().run_in_executor(self._fit_pool, self.run_fit, job)
        finally:
            self._pending_fits -= 1

    def prepare_fit(self, name: str, request: FitInput) -> _FitJob:
        """Every check a fit can fail before any training: estimator, parameters, features, labels."""
        fields = request.fields
        contract = fields.contract
        estimator = resolve(fields.estimator, contract.kind)
        params = estimator.resolve_params(fields.params)
        subject = "features"
        consumer = f"the {contract.kind} contract sent with them"
        tensor = feature_checks.decode(request.features, contract, subject=subject, consumer=consumer)
        rows = len(tensor)
        if rows > self.settings.max_fit_rows:
            raise PayloadTooLarge(
                f"{rows} rows, at most {self.settings.max_fit_rows} per fit.", limit_rows=self.settings.max_fit_rows
            )
        if rows and len(fields.labels) != rows:
            raise InvalidInput(f"{len(fields.labels)} labels for {rows} rows of features: one label per row.")
        feature_checks.validate(tensor, contract, subject=subject, consumer=consumer, max_rows=self.settings.max_fit_rows)
        labels = np.asarray(fields.labels, dtype=str)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise InvalidInput(f"A classifier needs at least two classes; every label is {str(classes[0])!r}.")
        if any(not label for label in fields.labels):
            raise InvalidInput("Labels must be non-empty strings.")
        estimator.check_labels(labels)
        if fields.texts is not None and len(fields.texts) != rows:
            raise InvalidInput(f"{len(fields.texts)} texts for {rows} rows of features: one text per row, or none.")
        return _FitJob(
            name, estimator, params, contract, fields.source, tensor, labels,
            feature_checks.data_sha256(tensor, list(fields.labels), contract.kind),
            retained_data.Retained(list(fields.texts), fields.reference_sample) if fields.texts is not None else None,
        )

    def run_fit(self, job: _FitJob) -> VersionRecord:
        """Trains, scores, saves a new version and serves it. Runs in the fit pool."""
        model, metrics = self._train(job)
        record = VersionRecord(
            name=job.name, version=0, estimator=job.estimator.name, params=job.params, input_contract=job.contract,
            source=job.source, classes=[str(c) for c in model.classes_], metrics=metrics, data_sha256=job.data_sha256,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        keep = job.retained
        if keep is not None:  # the reference sample, with the probabilities this version gives it now
            rows = retained_data.reference_rows(job.labels, keep.reference_size)
            reference = (np.asarray(model.predict_proba(job.estimator.prepare(feature_checks.take(job.features, rows))))
                         if len(rows) else np.zeros((0, len(record.classes))))
            record = record.model_copy(update={"retained": {"texts": len(keep.texts), "reference_sample": len(rows)}})

        def write_artifacts(folder: Path) -> None:
            job.estimator.save(model, folder)
            if keep is not None:
                retained_data.write(folder, keep, job.labels, rows, record.classes, reference)

        stored = record.model_dump(mode="json", exclude={"name", "version"})
        version = self.store.save(job.name, stored, write_artifacts)
        record = record.model_copy(update={"version": version})
        with self._lock:
            self._models.setdefault(job.name, {})[version] = LoadedVersion(record, job.estimator, model)
        log.info("fitted %s version %d (%s, %d rows)", job.name, version, job.estimator.name, len(job.labels))
        return record

    def _train(self, job: _FitJob) -> tuple[Any, Metrics]:
        estimator, y = job.estimator, job.labels
        X = estimator.prepare(job.features)
        # A fit that stops at max_iter still serves; it says so in its metrics instead of warning.
        # (catch_warnings is process-wide before Python 3.14: fits run one per fit_workers thread.)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                model = estimator.build(job.params, y).fit(X, y)
            except ValueError as exc:
                raise InvalidInput(f"{estimator.name} could not be fitted: {exc}", estimator=estimator.name) from exc
            cv_accuracy, cv_folds, cv_skipped = self._cross_validate(job, X)
        notes = sorted({str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)})
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                log.warning("%s fit: %s: %s", job.name, w.category.__name__, w.message)
        classes, counts = np.unique(y, return_counts=True)
        metrics = Metrics(
            train_accuracy=_accuracy(model, X, y),
            cv_accuracy=cv_accuracy,
            cv_folds=cv_folds,
            n_samples=len(y),
            cv_skipped_reason=cv_skipped,
            class_counts={str(c): int(n) for c, n in zip(classes, counts)},
            **estimator.fit_report(model),
            **({"convergence_warnings": notes} if notes else {}),
        )
        return model, metrics

    def _cross_validate(self, job: _FitJob, X: Any) -> tuple[float | None, int | None, str | None]:
        """Mean stratified k-fold accuracy: 5 folds, fewer when a class is small, none below 2."""
        estimator, y = job.estimator, job.labels
        if estimator.cv_skipped_reason:
            return None, None, estimator.cv_skipped_reason
        smallest = int(np.unique(y, return_counts=True)[1].min())
        folds = min(MAX_CV_FOLDS, smallest)
        if folds < 2:
            return None, None, f"the smallest class has {smallest} example; k-fold needs at least 2 per class"
        scores = []
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=_CV_SEED)
        for train, test in splitter.split(np.zeros(len(y)), y):
            try:
                estimator.check_labels(y[train])
            except InvalidInput as exc:
                return None, None, f"a training fold is too small for {estimator.name}: {exc.detail}"
            try:
                model = estimator.build(job.params, y[train]).fit(feature_checks.take(X, train), y[train])
            except ValueError as exc:
                return None, None, f"a training fold could not be fitted: {exc}"
            scores.append(_accuracy(model, feature_checks.take(X, test), y[test]))
        return float(np.mean(scores)), folds, None

    def close(self) -> None:
        self._fit_pool.shutdown(wait=False, cancel_futures=True)
