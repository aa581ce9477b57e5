"""The estimators a model can be fitted with, by input kind and task, and which one a fit gets.

- ``embedding`` (one vector per row): ``logistic_regression`` (default), ``gaussian_nb``,
  ``linear_svm`` (a LinearSVC with calibrated probabilities), ``mlp``.
- ``tokens`` (variable-length sequences): ``mean_pooling`` (mean over the real tokens, then logistic
  regression), ``attention_pooling`` and ``lstm`` (the torch heads of :mod:`classifier_service.heads`).
- ``probabilities`` (distributions of an upstream classifier): ``gaussian_nb`` (default) and
  ``logistic_regression``.

Regressors (a fit with numeric ``targets`` instead of ``labels``): ``ridge`` (default on embeddings and
probabilities), ``mlp_regressor`` (embeddings) and ``mean_pooling_ridge`` (default on tokens).

Each kind of estimator (how it is built, checked, fed and saved) is :mod:`classifier_service.estimator_types`'.
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor

from classifier_service.estimator_types import (
    CLASSIFICATION,
    REGRESSION,
    CalibratedLinearSVM,
    Estimator,
    SklearnEstimator,
    TorchHeadEstimator,
)
from classifier_service.heads import AttentionPoolingClassifier, LstmClassifier
from services.errors import IncompatibleEstimator, InvalidInput

DEFAULT_ESTIMATOR: dict[tuple[str, str], str] = {
    ("embedding", CLASSIFICATION): "logistic_regression",
    ("tokens", CLASSIFICATION): "mean_pooling",
    ("probabilities", CLASSIFICATION): "gaussian_nb",
    ("embedding", REGRESSION): "ridge",
    ("tokens", REGRESSION): "mean_pooling_ridge",
    ("probabilities", REGRESSION): "ridge",
}


def _head_cv_skipped(name: str) -> str:
    return (f"{name} is scored on its own stratified early-stopping split (holdout_accuracy) "
            "instead of k-fold, which would train the head k more times")


_LOGISTIC_DEFAULTS = {"max_iter": 1000}  # lbfgs needs more than sklearn's 100 on 384-wide embeddings

ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        SklearnEstimator(
            "logistic_regression",
            ("embedding", "probabilities"),
            "multinomial logistic regression (lbfgs)",
            cls=LogisticRegression,
            defaults=_LOGISTIC_DEFAULTS,
        ),
        SklearnEstimator(
            "gaussian_nb", ("embedding", "probabilities"), "Gaussian naive Bayes", cls=GaussianNB
        ),
        CalibratedLinearSVM(
            "linear_svm",
            ("embedding",),
            "linear SVM with sigmoid-calibrated probabilities",
            defaults={"random_state": 0, "max_iter": 10_000},
            skops_types=frozenset(
                {"sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"}
            ),
        ),
        SklearnEstimator(
            "mlp",
            ("embedding",),
            "multi-layer perceptron (one hidden layer of 100 by default)",
            cls=MLPClassifier,
            defaults={"random_state": 0, "max_iter": 1000},
            skops_types=frozenset(
                {
                    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
                    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
                }
            ),
        ),
        SklearnEstimator(
            "mean_pooling",
            ("tokens",),
            "mean of the real token vectors, then logistic regression",
            cls=LogisticRegression,
            defaults=_LOGISTIC_DEFAULTS,
            pool=True,
        ),
        TorchHeadEstimator(
            "attention_pooling",
            ("tokens",),
            "learned attention over the token vectors (padding masked out), then a linear layer",
            head=AttentionPoolingClassifier,
            cv_skipped_reason=_head_cv_skipped("attention_pooling"),
        ),
        TorchHeadEstimator(
            "lstm",
            ("tokens",),
            "bidirectional LSTM over the packed token vectors, mean-pooled over the real tokens, then a linear layer",
            head=LstmClassifier,
            cv_skipped_reason=_head_cv_skipped("lstm"),
        ),
        SklearnEstimator(
            "ridge",
            ("embedding", "probabilities"),
            "ridge regression (L2-penalised least squares)",
            task=REGRESSION,
            cls=Ridge,
        ),
        SklearnEstimator(
            "mean_pooling_ridge",
            ("tokens",),
            "mean of the real token vectors, then ridge regression",
            task=REGRESSION,
            cls=Ridge,
            pool=True,
        ),
        SklearnEstimator(
            "mlp_regressor",
            ("embedding",),
            "multi-layer perceptron regressor (one hidden layer of 100 by default)",
            task=REGRESSION,
            cls=MLPRegressor,
            defaults={"random_state": 0, "max_iter": 1000},
            skops_types=frozenset(
                {
                    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
                    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
                }
            ),
        ),
    )
}


def estimators_for(kind: str, task: str = CLASSIFICATION) -> list[str]:
    """Names of the estimators of ``task`` that accept ``kind``, the default first."""
    default = DEFAULT_ESTIMATOR[(kind, task)]
    return [default, *(n for n, e in ESTIMATORS.items() if kind in e.kinds and e.task == task and n != default)]


def resolve(name: str | None, kind: str, task: str = CLASSIFICATION) -> Estimator:
    """The estimator to fit ``kind`` features with for ``task`` (the default when ``name`` is None)."""
    allowed = estimators_for(kind, task)
    if name is None:
        return ESTIMATORS[allowed[0]]
    estimator = ESTIMATORS.get(name)
    if estimator is None:
        raise InvalidInput(
            f"Unknown estimator {name!r}; for {kind} features use one of: {', '.join(allowed)}.",
            estimator=name,
            kind=kind,
            allowed=allowed,
        )
    if estimator.task != task:
        given = "labels" if task == CLASSIFICATION else "targets"
        wants = "labels" if estimator.task == CLASSIFICATION else "numeric targets"
        raise InvalidInput(
            f"{name} is a {estimator.task} estimator: it is fitted with {wants}, and this fit sent {given}; "
            f"for {task} on {kind} features use one of: {', '.join(allowed)}.",
            estimator=name, task=task, allowed=allowed,
        )
    if kind not in estimator.kinds:
        raise IncompatibleEstimator(
            f"{name} does not fit {kind} features (it takes {', '.join(estimator.kinds)}); "
            f"for {kind} use one of: {', '.join(allowed)}.",
            estimator=name,
            kind=kind,
            allowed=allowed,
        )
    return estimator
