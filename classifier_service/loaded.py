"""One fitted version in memory: reading it from the store (every check that it can be served) and
predicting with it. No HTTP, no store bookkeeping (:mod:`classifier_service.runtime` keeps those).

Nothing non-finite is ever answered: a prediction whose probabilities are not finite numbers is
refused (422, naming its rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from classifier_service import features as feature_checks
from classifier_service.calibration import Calibrator, check_method
from classifier_service.estimator_types import CLASSIFICATION, REGRESSION, Estimator
from classifier_service.estimators import ESTIMATORS
from classifier_service.ood import OodSummary
from classifier_service.preprocess import Preprocessor
from classifier_service.schemas import VersionRecord
from classifier_service.store import StoreEntryError, VersionStore
from services.codecs import Tensor
from services.errors import InvalidInput

_SHOWN = 5  # row indices quoted in a message


@dataclass(frozen=True)
class LoadedVersion:
    """One fitted version, ready to predict: its preprocessing, model, calibration and OOD summary."""

    record: VersionRecord
    estimator: Estimator
    model: Any
    preprocessor: Preprocessor | None
    calibrator: Calibrator | None
    ood: OodSummary | None

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


def load_version(store: VersionStore, name: str, version: int) -> LoadedVersion:
    """A stored version, checked to be servable: its record, estimator, artifacts and classes;
    StoreEntryError saying what is wrong otherwise."""
    stored = store.read(name, version)
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
