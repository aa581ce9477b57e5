"""Training one version: preprocessing, the estimator, cross-validation, calibration and the
out-of-distribution summary. Pure computation on a prepared job: no HTTP, no store.

Cross-validation fits everything a fold's model needs (the preprocessing steps too) on the fold's
training rows only, so the scores are those of unseen rows. Classifiers: stratified k-fold accuracy
(5 folds, fewer when a class is small, none below 2). Regressors: k-fold R², MAE and RMSE (5 folds,
fewer for fewer than 10 rows), each the mean over the folds.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold

from classifier_service import features as feature_checks
from classifier_service import ood as ood_summary
from classifier_service.calibration import Calibrator
from classifier_service.estimator_types import CLASSIFICATION, Estimator
from classifier_service.preprocess import Preprocessor
from services.codecs import Tensor
from services.contracts import TensorContract
from services.errors import InvalidInput
from services.scoring import expected_calibration_error, regression_report

log = logging.getLogger("seam.classifier")

MAX_CV_FOLDS = 5
_SHOWN = 5  # row indices quoted in a message
_CV_SEED = 0


@dataclass
class FitJob:
    name: str
    estimator: Estimator
    params: dict[str, Any]
    contract: TensorContract
    source: dict[str, Any] | None
    features: Tensor
    labels: np.ndarray  # class names (str) for a classifier, float targets for a regressor
    data_sha256: str
    task: str = CLASSIFICATION
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    calibrate: str | None = None
    retained: Any = None  # classifier_service.retained.Retained: kept with the version, never sent to a worker


@dataclass
class Trained:
    model: Any
    preprocessor: Preprocessor
    calibrator: Calibrator | None
    ood: ood_summary.OodSummary
    metrics: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in getattr(self.model, "classes_", [])]

    def save(self, estimator: Estimator, folder: Path) -> None:
        estimator.save(self.model, folder)
        self.preprocessor.save(folder)
        if self.calibrator is not None:
            self.calibrator.save(folder)
        self.ood.save(folder)


def _accuracy(model: Any, X: Any, y: np.ndarray) -> float:
    classes = np.asarray(model.classes_)
    with np.errstate(all="ignore"):
        return float((classes[np.asarray(model.predict_proba(X)).argmax(axis=1)] == y).mean())


def refuse_degenerate(job: FitJob, outputs: np.ndarray) -> None:
    """A model whose outputs on its own training rows are not finite could only answer NaN: 422."""
    bad = np.flatnonzero(~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1))
    if not len(bad):
        return
    shown = ", ".join(str(int(i)) for i in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
    why = (
        "every feature has the same value in every row, so its variance is zero and gaussian_nb divides by it"
        if job.estimator.name == "gaussian_nb" and np.ptp(feature_checks.values_of(job.features), axis=0).max() == 0
        else "the features are too extreme or too uniform for it (values that overflow, or no variation)"
    )
    what = "values" if job.task == "regression" else "probabilities"
    raise InvalidInput(
        f"{job.estimator.name} fitted on these rows is degenerate: its {what} for {len(bad)} of its own "
        f"{len(outputs)} training rows (row {shown}) are not finite numbers, so it could only answer NaN. "
        f"Why: {why}. Nothing was saved; send features that vary, on a usual scale, or choose another estimator.",
        estimator=job.estimator.name,
        rows=[int(i) for i in bad[:_SHOWN]],
    )


def _fit_one(job: FitJob, index: np.ndarray | None) -> tuple[Preprocessor, Any, Any]:
    """Preprocessing and model fitted on the rows ``index`` (all when None); also the prepared rows."""
    features = job.features if index is None else feature_checks.take(job.features, index)
    y = job.labels if index is None else job.labels[index]
    pre = Preprocessor(job.preprocess).fit(features)
    X = job.estimator.prepare(pre.transform(features))
    return pre, job.estimator.build(job.params, y).fit(X, y), X


def _predict(job: FitJob, pre: Preprocessor, model: Any, index: np.ndarray) -> np.ndarray:
    X = job.estimator.prepare(pre.transform(feature_checks.take(job.features, index)))
    if job.task == CLASSIFICATION:
        return np.asarray(model.predict_proba(X), dtype=np.float64)
    return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)


def _folds(job: FitJob) -> tuple[list[tuple[np.ndarray, np.ndarray]], str | None]:
    y = job.labels
    if job.task != CLASSIFICATION:
        folds = min(MAX_CV_FOLDS, len(y) // 2)
        if folds < 2:
            return [], f"{len(y)} rows: k-fold needs at least 4"
        return list(KFold(n_splits=folds, shuffle=True, random_state=_CV_SEED).split(np.zeros(len(y)))), None
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = min(MAX_CV_FOLDS, smallest)
    if folds < 2:
        return [], f"the smallest class has {smallest} example; k-fold needs at least 2 per class"
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=_CV_SEED)
    return list(splitter.split(np.zeros(len(y)), y)), None


def _cross_validate(job: FitJob, classes: np.ndarray) -> dict[str, Any]:
    """Per-fold scores and the out-of-fold predictions (for calibration)."""
    folds, skipped = _folds(job)
    if skipped:
        return {"skipped": skipped}
    estimator, y = job.estimator, job.labels
    out_of_fold = np.zeros((len(y), len(classes))) if job.task == CLASSIFICATION else np.zeros(len(y))
    scores: list[Any] = []
    for train, test in folds:
        if job.task == CLASSIFICATION:
            try:
                estimator.check_labels(y[train])
            except InvalidInput as exc:
                return {"skipped": f"a training fold is too small for {estimator.name}: {exc.detail}"}
        try:
            with np.errstate(all="ignore"):
                pre, model, _ = _fit_one(job, train)
        except (ValueError, InvalidInput) as exc:
            return {"skipped": f"a training fold could not be fitted: {getattr(exc, 'detail', exc)}"}
        with np.errstate(all="ignore"):
            predicted = _predict(job, pre, model, test)
        if job.task == CLASSIFICATION:
            columns = np.searchsorted(classes, np.asarray(model.classes_))
            out_of_fold[np.ix_(test, columns)] = predicted
            scores.append(float((classes[out_of_fold[test].argmax(axis=1)] == y[test]).mean()))
        else:
            out_of_fold[test] = predicted
            scores.append(regression_report(y[test], predicted))
    return {"folds": folds, "scores": scores, "out_of_fold": out_of_fold}


def _calibrate(job: FitJob, classes: np.ndarray, cv: dict[str, Any]) -> tuple[Calibrator, dict[str, Any]]:
    """The calibrator (fitted on every out-of-fold row) and the ECE before and after, both out of fold:
    the "after" of each fold's rows comes from a calibrator fitted on the other folds' rows."""
    assert job.calibrate is not None
    if "skipped" in cv:
        raise InvalidInput(
            f"calibrate needs out-of-fold probabilities, and cross-validation is impossible here: {cv['skipped']}.",
            calibrate=job.calibrate,
        )
    probabilities = cv["out_of_fold"]
    truth = np.searchsorted(classes, job.labels)
    calibrated = np.zeros_like(probabilities)
    for train, test in cv["folds"]:
        calibrated[test] = Calibrator(job.calibrate, len(classes)).fit(probabilities[train], truth[train]).transform(probabilities[test])
    calibrator = Calibrator(job.calibrate, len(classes)).fit(probabilities, truth)
    return calibrator, {
        "calibration": job.calibrate,
        "ece_before": expected_calibration_error(probabilities, truth),
        "ece_after": expected_calibration_error(calibrated, truth),
    }


def train(job: FitJob) -> Trained:
    """Fits, scores and summarises one version."""
    estimator, y = job.estimator, job.labels
    # A fit that stops at max_iter still serves; it says so in its metrics instead of warning.
    # (catch_warnings is process-wide before Python 3.14: fits run one per fit_workers thread.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            with np.errstate(all="ignore"):
                pre, model, X = _fit_one(job, None)
        except ValueError as exc:
            raise InvalidInput(f"{estimator.name} could not be fitted: {exc}", estimator=estimator.name) from exc
        with np.errstate(all="ignore"):  # overflow shows in the result, refused just below
            own = model.predict_proba(X) if job.task == CLASSIFICATION else model.predict(X)
        refuse_degenerate(job, np.asarray(own, dtype=np.float64))
        classes = np.unique(y) if job.task == CLASSIFICATION else np.array([])
        wants_cv = not estimator.cv_skipped_reason
        cv = _cross_validate(job, classes) if (wants_cv or job.calibrate) else {}
        calibrator, calibration = _calibrate(job, classes, cv) if job.calibrate else (None, {})
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)})
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            log.warning("%s fit: %s: %s", job.name, w.category.__name__, w.message)
    skipped = estimator.cv_skipped_reason or cv.get("skipped")
    folds = None if skipped else len(cv["folds"])
    metrics: dict[str, Any] = {"n_samples": len(y), "cv_folds": folds, "cv_skipped_reason": skipped}
    if job.task == CLASSIFICATION:
        values, counts = np.unique(y, return_counts=True)
        metrics.update(
            train_accuracy=_accuracy(model, X, y),
            cv_accuracy=None if skipped else float(np.mean(cv["scores"])),
            class_counts={str(c): int(n) for c, n in zip(values, counts)},
            **calibration,
        )
    else:
        train_scores = regression_report(y, np.asarray(model.predict(X)).reshape(-1))
        metrics.update(train_r2=train_scores["r2"], train_mae=train_scores["mae"], train_rmse=train_scores["rmse"],
                       train_accuracy=None, cv_accuracy=None)
        for key in ("r2", "mae", "rmse"):
            metrics[f"cv_{key}"] = None if skipped else float(np.mean([s[key] for s in cv["scores"]]))
    metrics.update(estimator.fit_report(model))
    if notes:
        metrics["convergence_warnings"] = notes
    summary = ood_summary.OodSummary.fit(
        estimator.summary_vectors(X), np.asarray(y) if job.task == CLASSIFICATION else None
    )
    return Trained(model, pre, calibrator, summary, metrics)
