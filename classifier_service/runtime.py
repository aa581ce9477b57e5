"""The classifier runtime: fitted models in memory, backed by the store. No HTTP here.

Fits are handed by a dedicated thread pool (``fit_workers`` threads) to worker processes
(:mod:`classifier_service.fitting`), bounded by ``fit_timeout_s``; predictions run in anyio's worker
threads, so the event loop never computes and predictions keep being served while a fit runs.

Nothing non-finite is ever answered: a prediction whose probabilities are not finite numbers is
refused (422, naming its rows), and so is a fit whose model gives such probabilities on its own
training rows. A damaged version is reported and refused by number, and "latest" never skips it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
from pydantic import ValidationError

from classifier_service import features as feature_checks
from classifier_service import heads
from classifier_service import retained as retained_data
from classifier_service.aliases import open_aliases
from classifier_service.calibration import Calibrator, check_method
from classifier_service.estimators import CLASSIFICATION, ESTIMATORS, REGRESSION, Estimator, resolve
from classifier_service.fitting import FitWorkers
from classifier_service.ood import METHOD as OOD_METHOD
from classifier_service.ood import OodSummary
from classifier_service.preprocess import Preprocessor, parse_steps
from classifier_service.schemas import FitInput, Metrics, PredictInput, VersionRecord
from classifier_service.training import FitJob, Trained
from classifier_service.settings import ClassifierSettings
from classifier_service.store import Skipped, StoreEntryError, open_store
from services.codecs import Tensor
from services.errors import DamagedVersion, InvalidInput, ModelNotFound, Overloaded, PayloadTooLarge

log = logging.getLogger("seam.classifier")

T = TypeVar("T")

# A light model (scikit-learn) predicts this many rows in less time than the round trip to a worker
# thread and back costs: such predictions run on the event loop. Measured here: the 1-row predict
# route in-process, 0.52-0.65 ms inline against 0.90-1.02 ms through the thread; a lone text through
# the gateway, four runs of alternating rounds against a classifier without it, -0.9, -0.1, +0.3 and
# -0.8 ms at p50 (about 450 requests each way per run).
INLINE_PREDICT_ROWS = 64
_FitJob = FitJob  # the name it had here
_SHOWN = 5  # row indices quoted in a message


@dataclass(frozen=True)
class LoadedVersion:
    """One fitted version, ready to predict: its preprocessing, model, calibration and OOD summary."""

    record: VersionRecord
    estimator: Estimator
    model: Any
    preprocessor: Preprocessor | None = None
    calibrator: Calibrator | None = None
    ood: OodSummary | None = None

    def _raw(self, X: Any) -> np.ndarray:
        if self.record.task == REGRESSION:
            return np.asarray(self.model.predict(X), dtype=np.float64).reshape(-1)
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)

    def outputs(self, features: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (rows, classes) or a regressor's values (rows,), and the OOD scores (or None).
        Rows whose arithmetic overflows (finite features so extreme that the model's sums leave the
        float range) or whose outputs are not finite are refused with a 422 naming them."""
        if self.preprocessor:
            features = self.preprocessor.transform(features)
        X = self.estimator.prepare(features)
        try:
            with np.errstate(over="raise", invalid="raise"):
                out = self._raw(X)
        except FloatingPointError:
            self._refuse(self._overflowing_rows(X))
            raise
        bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))
        if len(bad):
            self._refuse(bad)
        if self.calibrator is not None:
            out = self.calibrator.transform(out)
        scores = None if self.ood is None else self.ood.score(self.estimator.summary_vectors(X))
        return out, scores

    def predict_proba(self, features: Tensor) -> np.ndarray:
        """Class probabilities per row (a regressor: its values); see :meth:`outputs`."""
        return self.outputs(features)[0]

    def _overflowing_rows(self, X: Any) -> np.ndarray:
        """The rows whose prediction alone overflows (the slow path: only after an overflow)."""
        bad = []
        for i in range(len(X)):
            try:
                with np.errstate(over="raise", invalid="raise"):
                    row = self._raw(feature_checks.take(X, np.array([i])))
            except FloatingPointError:
                bad.append(i)
                continue
            if not np.isfinite(row).all():
                bad.append(i)
        return np.array(bad, dtype=np.int64)

    def _refuse(self, bad: np.ndarray) -> None:
        if not len(bad):
            return
        record = self.record
        shown = ", ".join(str(int(i)) for i in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
        raise InvalidInput(
            f"features: row {shown} cannot be {'predicted' if record.task == REGRESSION else 'classified'} by model {record.name!r} version {record.version} "
            f"({record.estimator}): the values are so extreme that its arithmetic overflows (e.g. magnitudes near "
            "1e38), so its probabilities would not be numbers. Send features on the scale the model was fitted on.",
            name=record.name, version=record.version, rows=[int(i) for i in bad[:_SHOWN]],
        )


@dataclass(frozen=True)
class PredictionResult:
    name: str
    version: int
    classes: list[str]
    probabilities: np.ndarray  # a regressor's values, (rows,)
    task: str = CLASSIFICATION
    ood: np.ndarray | None = None


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_free_form(field: str, value: Any, *, max_depth: int, max_bytes: int) -> None:
    """A fit's free-form fields are recorded and echoed back: bounded in depth and size before any work."""
    if value is None:
        return
    depth = _depth(value)
    if depth > max_depth:
        raise InvalidInput(
            f"{field} nests {depth} levels deep; at most {max_depth} (CLASSIFIER_MAX_SOURCE_DEPTH).",
            field=field, limit=max_depth,
        )
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"{field} takes {size} bytes as JSON; at most {max_bytes} (CLASSIFIER_MAX_SOURCE_BYTES).",
            field=field, limit=max_bytes,
        )


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
                    current[version] = self._load_version(name, version)
                except StoreEntryError as exc:
                    self._skip(Skipped(path, str(exc), identity, version))
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
        if estimator.task != record.task:
            raise StoreEntryError(f"{record.estimator} is a {estimator.task} estimator, the record says {record.task}")
        try:
            model = estimator.load(stored.folder)
            preprocessor = Preprocessor.load(record.preprocess, stored.folder)
            calibrator = None
            if record.calibrate is not None:
                calibrator = Calibrator.load(check_method(record.calibrate), len(record.classes), stored.folder)
            ood = OodSummary.load(stored.folder)
        except StoreEntryError:
            raise
        except Exception as exc:  # a damaged artifact fails in many ways; none may stop the service
            raise StoreEntryError(f"{record.estimator} artifacts could not be loaded ({type(exc).__name__}: {exc})") from exc
        if record.task == CLASSIFICATION and [str(c) for c in model.classes_] != record.classes:
            raise StoreEntryError("the model's classes differ from the manifest's")
        return LoadedVersion(record, estimator, model, preprocessor, calibrator, ood)

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
            job = await anyio.to_thread.run_sync(self.prepare_fit, name, request)
            return await asyncio.get_running_loop().run_in_executor(self._fit_pool, self.run_fit, job)
        finally:
            self._pending_fits -= 1

    def prepare_fit(self, name: str, request: FitInput) -> FitJob:
        """Every check a fit can fail before any training: estimator, parameters, steps, features,
        labels or targets, and the size of the model they would make."""
        fields = request.fields
        for field, value in (("source", fields.source), ("params", fields.params)):
            _check_free_form(field, value, max_depth=self.settings.max_source_depth, max_bytes=self.settings.max_source_bytes)
        contract = fields.contract
        if (fields.labels is None) == (fields.targets is None):
            raise InvalidInput(
                "Send labels (one class name per row: a classifier) or targets (one number per row: a regressor), "
                "exactly one of them."
            )
        task = CLASSIFICATION if fields.labels is not None else REGRESSION
        estimator = resolve(fields.estimator, contract.kind, task)
        params = estimator.resolve_params(fields.params)
        steps = parse_steps(fields.preprocess)
        calibrate = check_method(fields.calibrate)
        if calibrate and task == REGRESSION:
            raise InvalidInput("calibrate applies to classifiers' probabilities; a regressor (targets) has none.",
                               calibrate=calibrate)
        subject = "features"
        consumer = f"the {contract.kind} contract sent with them"
        tensor = feature_checks.decode(request.features, contract, subject=subject, consumer=consumer)
        rows = len(tensor)
        if rows > self.settings.max_fit_rows:
            raise PayloadTooLarge(
                f"{rows} rows, at most {self.settings.max_fit_rows} per fit (CLASSIFIER_MAX_FIT_ROWS).",
                limit_rows=self.settings.max_fit_rows,
            )
        given = fields.labels if fields.labels is not None else fields.targets
        what = "labels" if task == CLASSIFICATION else "targets"
        if rows and len(given) != rows:
            raise InvalidInput(f"{len(given)} {what} for {rows} rows of features: one per row.")
        feature_checks.validate(tensor, contract, subject=subject, consumer=consumer, max_rows=self.settings.max_fit_rows)
        vectors = int(tensor.values.shape[0]) if hasattr(tensor, "values") else rows
        Preprocessor(steps).check(contract.dim, vectors)
        width = Preprocessor(steps).output_dim(contract.dim)
        if task == REGRESSION:
            labels = _targets(fields.targets)
            if len(labels) < 2:
                raise InvalidInput(f"A regressor needs at least two rows; got {len(labels)}.")
            outputs = 1
        else:
            self._check_labels(fields.labels)
            labels = np.asarray(fields.labels, dtype=str)
            classes = np.unique(labels)
            if len(classes) < 2:
                raise InvalidInput(f"A classifier needs at least two classes; every label is {str(classes[0])!r}.")
            estimator.check_labels(labels)
            outputs = len(classes)
        estimator.check_size(params, dim=width, classes=outputs, limit=self.settings.max_model_parameters)
        if fields.texts is not None and len(fields.texts) != rows:
            raise InvalidInput(f"{len(fields.texts)} texts for {rows} rows of features: one text per row, or none.")
        return FitJob(
            name, estimator, params, contract, fields.source, tensor, labels,
            feature_checks.data_sha256(tensor, list(given), contract.kind), task, steps, calibrate,
            retained_data.Retained(list(fields.texts), fields.reference_sample) if fields.texts is not None else None,
        )

    def _check_labels(self, labels: list[str]) -> None:
        """Every label names a class: some visible character, at most ``max_label_chars`` characters."""
        limit = self.settings.max_label_chars
        for i, label in enumerate(labels):
            if not label.strip():
                raise InvalidInput(
                    f"labels[{i}] is {'empty' if not label else 'blank'} ({label!r}); every label needs at least one "
                    "non-space character.", index=i,
                )
            if len(label) > limit:
                raise InvalidInput(
                    f"labels[{i}] has {len(label)} characters; a label has at most {limit} (CLASSIFIER_MAX_LABEL_CHARS).",
                    index=i, limit=limit,
                )

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


def _targets(raw: list | None) -> np.ndarray:
    """Regression targets: numbers (not strings, not booleans), finite. 422 naming the first bad row."""
    assert raw is not None
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(
                f"targets must be numbers: row {i} is {value!r} ({type(value).__name__}). Send labels instead "
                "for classes.", row=i,
            )
        if not math.isfinite(value):
            raise InvalidInput(f"targets must be finite numbers: row {i} is {value!r}.", row=i)
    return np.asarray(raw, dtype=np.float64)
