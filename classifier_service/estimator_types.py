"""How each kind of estimator is built, checked, fed and persisted: scikit-learn models (saved with skops),
a LinearSVC with calibrated probabilities, and the torch heads of :mod:`classifier_service.heads`.

Parameters are checked before a fit is queued, strictly: a boolean is not a number (``max_iter:
true`` is refused), ``hidden_layer_sizes`` is a list of positive integers, and the model they would
make is bounded in weights (``CLASSIFIER_MAX_MODEL_PARAMETERS``), so no fit asks for more memory than
the service has. Every refusal is a 422 naming the parameter and what it accepts.

scikit-learn models persist with skops; each estimator names the few non-default types its file may
hold, and loading refuses any other (see :func:`classifier_service.store.load_skops`). The named
estimators, and which one a fit gets, are :mod:`classifier_service.estimators`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import make_constraint

from classifier_service.heads import AttentionPoolingClassifier, LstmClassifier, SequenceHead
from classifier_service.store import dump_skops, load_skops
from services.codecs import Ragged, Tensor
from services.errors import InvalidInput

SKOPS_FILE = "model.skops"

CLASSIFICATION, REGRESSION = "classification", "regression"


def mean_pool(tokens: Ragged) -> np.ndarray:
    """The mean of each sequence's real token vectors (sequences travel unpadded, so none is padding)."""
    if len(tokens) == 0:
        return np.zeros((0, tokens.dim), dtype=np.float32)
    if (tokens.lengths == 0).any():
        raise ValueError("mean pooling needs at least one token per sequence")
    sums = np.add.reduceat(tokens.values.astype(np.float64), tokens.offsets[:-1], axis=0)
    return (sums / tokens.lengths[:, None]).astype(np.float32)


@dataclass(frozen=True)
class Estimator:
    """One named estimator: the kinds it accepts, its parameters, how to build, feed and persist it."""

    name: str
    kinds: tuple[str, ...]
    description: str
    task: str = CLASSIFICATION
    # A prediction of a few rows takes less time than the round trip to a worker thread: it may run on
    # the event loop (scikit-learn models; not the torch head).
    light = False

    def accepted_params(self) -> list[str]:
        raise NotImplementedError

    def _defaults(self) -> dict[str, Any]:
        return {}

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a fit uses: the service's defaults overridden by ``given``. Refuses any name
        the estimator does not take, naming the accepted ones."""
        accepted = self.accepted_params()
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise InvalidInput(
                f"{self.name} does not take the parameter(s) {', '.join(unknown)}; it accepts: {', '.join(accepted)}.",
                estimator=self.name,
                unknown_params=unknown,
                accepted_params=accepted,
            )
        params = {**self._defaults(), **given}
        self.build(params, None)  # refuses bad values now, before a fit is queued
        return params

    def check_labels(self, y: np.ndarray) -> None:
        """Refuses label sets this estimator cannot fit (beyond the two-class minimum)."""

    def weights(self, params: Mapping[str, Any], *, dim: int, classes: int) -> int:
        """How many numbers the fitted model holds (the default: a linear layer, dim -> classes)."""
        return (dim + 1) * classes

    def check_size(self, params: Mapping[str, Any], *, dim: int, classes: int, limit: int) -> None:
        """Refuses parameters that would make a model of more than ``limit`` weights."""
        weights = self.weights(params, dim=dim, classes=classes)
        if weights > limit:
            raise InvalidInput(
                f"{self.name} with these parameters would hold {weights:,} weights for {dim}-wide features and "
                f"{classes} classes; the limit is {limit:,} (CLASSIFIER_MAX_MODEL_PARAMETERS). Choose smaller "
                "layers (hidden_layer_sizes), or raise the setting where memory allows.",
                estimator=self.name, weights=weights, limit=limit,
            )

    def prepare(self, features: Tensor) -> Any:
        """What the fitted model consumes, made from validated features."""
        return features

    def build(self, params: Mapping[str, Any], y: np.ndarray | None) -> Any:
        """An unfitted model. ``y`` (training labels) lets an estimator size itself; None when only
        checking the parameters."""
        raise NotImplementedError

    cv_skipped_reason: str | None = None

    def summary_vectors(self, prepared: Any) -> np.ndarray:
        """Dense rows standing for what the model consumed (token sequences mean-pooled): what the
        out-of-distribution summary is made from."""
        return mean_pool(prepared) if isinstance(prepared, Ragged) else np.asarray(prepared)

    def fit_report(self, model: Any) -> dict[str, Any]:
        """Extra metrics the fitted model reports about its own training."""
        return {}

    def save(self, model: Any, folder: Path) -> None:
        raise NotImplementedError

    def load(self, folder: Path) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class SklearnEstimator(Estimator):
    """A scikit-learn classifier, persisted with skops."""

    light = True
    cls: type[BaseEstimator] = LogisticRegression
    defaults: Mapping[str, Any] = field(default_factory=dict)
    skops_types: frozenset[str] = frozenset()
    pool: bool = False

    def accepted_params(self) -> list[str]:
        # Deprecated parameters (sklearn marks their default "deprecated") are not offered.
        return sorted(k for k, v in self.cls().get_params(deep=False).items() if not (isinstance(v, str) and v == "deprecated"))

    def _defaults(self) -> dict[str, Any]:
        return dict(self.defaults)

    def prepare(self, features: Tensor) -> Any:
        return mean_pool(features) if self.pool else features

    def build(self, params: Mapping[str, Any], y: np.ndarray | None) -> BaseEstimator:
        _check_types(self.name, self.cls, params)
        return _validated(self.name, self.cls(**params))

    def weights(self, params: Mapping[str, Any], *, dim: int, classes: int) -> int:
        if self.cls in (MLPClassifier, MLPRegressor):
            hidden = params.get("hidden_layer_sizes", (100,))
            widths = [dim, *([hidden] if isinstance(hidden, int) else hidden), classes]
            return sum((a + 1) * b for a, b in zip(widths, widths[1:]))
        if self.cls is GaussianNB:
            return 2 * dim * classes + classes
        return super().weights(params, dim=dim, classes=classes)

    def save(self, model: Any, folder: Path) -> None:
        dump_skops(model, folder / SKOPS_FILE)

    def load(self, folder: Path) -> Any:
        return load_skops(folder / SKOPS_FILE, allowed=self.skops_types, expected=self._loaded_type())

    def _loaded_type(self) -> type:
        return self.cls


@dataclass(frozen=True)
class CalibratedLinearSVM(SklearnEstimator):
    """LinearSVC has no probabilities; sigmoid (or isotonic) calibration over stratified folds adds them."""

    cls: type[BaseEstimator] = LinearSVC
    max_calibration_folds: int = 5

    def accepted_params(self) -> list[str]:
        return sorted([*super().accepted_params(), "calibration_method"])

    def check_labels(self, y: np.ndarray) -> None:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise InvalidInput(
                "linear_svm calibrates its probabilities by cross-validation: every class needs at least "
                "2 examples.",
                estimator=self.name,
            )

    def build(self, params: Mapping[str, Any], y: np.ndarray | None) -> BaseEstimator:
        svc_params = {k: v for k, v in params.items() if k != "calibration_method"}
        _check_types(self.name, LinearSVC, svc_params)
        folds = 2 if y is None else int(min(self.max_calibration_folds, np.unique(y, return_counts=True)[1].min()))
        svc = _validated(self.name, LinearSVC(**svc_params))
        model = CalibratedClassifierCV(svc, method=params.get("calibration_method", "sigmoid"), cv=folds)
        return _validated(self.name, model)

    def weights(self, params: Mapping[str, Any], *, dim: int, classes: int) -> int:
        return super().weights(params, dim=dim, classes=classes) * self.max_calibration_folds

    def _loaded_type(self) -> type:
        return CalibratedClassifierCV


@dataclass(frozen=True)
class TorchHeadEstimator(Estimator):
    """A torch head of :mod:`classifier_service.heads`, persisted as safetensors + JSON."""

    head: type[SequenceHead] = AttentionPoolingClassifier

    def accepted_params(self) -> list[str]:
        return sorted(self.head.PARAMS.model_fields)

    def _defaults(self) -> dict[str, Any]:
        return self.head.PARAMS().model_dump()

    def build(self, params: Mapping[str, Any], y: np.ndarray | None) -> SequenceHead:
        try:
            return self.head(self.head.PARAMS(**params))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"{self.name} refused its parameters: {problems}", estimator=self.name) from exc

    def weights(self, params: Mapping[str, Any], *, dim: int, classes: int) -> int:
        if self.head is LstmClassifier:
            hidden = int(params.get("hidden_size", 64))
            return 2 * 4 * hidden * (dim + hidden + 2) + (2 * hidden + 1) * classes
        return (dim + 1) + (dim + 1) * classes  # attention: a score layer and the output layer

    def fit_report(self, model: SequenceHead) -> dict[str, Any]:
        return dict(model.fit_report)

    def save(self, model: SequenceHead, folder: Path) -> None:
        model.save(folder)

    def load(self, folder: Path) -> SequenceHead:
        return self.head.load(folder)




def _accepts(constraints: list[Any]) -> str:
    return " or ".join(str(make_constraint(c)) for c in constraints) or "no value"


def _check_types(name: str, cls: type[BaseEstimator], params: Mapping[str, Any]) -> None:
    """What scikit-learn's own checks let through: a boolean where a number is meant (``True`` is an
    int to Python), and ``hidden_layer_sizes`` that are not positive integers."""
    constraints = getattr(cls, "_parameter_constraints", {})
    for key, value in params.items():
        allowed = constraints.get(key, [])
        if key == "hidden_layer_sizes":
            widths = [value] if isinstance(value, int) and not isinstance(value, bool) else value
            if not (isinstance(widths, list) and widths and all(
                    isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
                raise InvalidInput(
                    f"{name}: the parameter hidden_layer_sizes must be a non-empty list of layer widths, each an "
                    f"integer >= 1 (e.g. [100] or [64, 32]); got {value!r}.",
                    estimator=name, parameter=key,
                )
        elif isinstance(value, bool) and not any(c == "boolean" or c is bool for c in allowed):
            raise InvalidInput(
                f"{name}: the parameter {key} must be {_accepts(allowed)}; got {str(value).lower()} "
                "(a boolean is not a number).",
                estimator=name, parameter=key,
            )


def _validated(name: str, model: BaseEstimator) -> BaseEstimator:
    """scikit-learn checks parameter values only at fit; check them now to refuse a fit before it queues."""
    try:
        model._validate_params()
    except ValueError as exc:  # sklearn's InvalidParameterError is a ValueError naming the parameter
        raise InvalidInput(f"{name} refused its parameters: {exc}", estimator=name) from exc
    return model

