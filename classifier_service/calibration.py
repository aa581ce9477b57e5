"""Calibrated probabilities: ``"calibrate": "sigmoid" | "isotonic"`` on any classifier.

Like scikit-learn's ``CalibratedClassifierCV(ensemble=False)``: one calibrator per class (one-vs-rest)
is fitted on out-of-fold probabilities of the estimator, then applied to the final model's
probabilities, and the rows renormalised. ``sigmoid`` is Platt scaling (a logistic regression on the
log-odds of the class's probability); ``isotonic`` a non-decreasing step function. Both persist as
arrays (``calibration.safetensors``): no pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from services.errors import InvalidInput

METHODS = ("sigmoid", "isotonic")
CALIBRATION_FILE = "calibration.safetensors"
_EPS = 1e-7


def check_method(method: str | None) -> str | None:
    if method is not None and method not in METHODS:
        raise InvalidInput(f"unknown calibration {method!r}; use one of: {', '.join(METHODS)} (or leave it out).",
                           calibrate=method)
    return method


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """Per-class calibration maps fitted on (probabilities, true class index) pairs."""

    def __init__(self, method: str, n_classes: int) -> None:
        self.method = method
        self.n_classes = n_classes
        self.arrays: dict[str, np.ndarray] = {}

    def fit(self, probabilities: np.ndarray, truth: np.ndarray) -> Calibrator:
        self.arrays = {}
        for k in range(self.n_classes):
            target = (truth == k).astype(np.float64)
            p = probabilities[:, k]
            if self.method == "sigmoid":
                if target.min() == target.max():  # one outcome only: the constant map
                    a, b = 0.0, float(_logit(np.array([target.mean()]))[0])
                else:
                    lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], target)
                    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
                self.arrays[f"{k}.ab"] = np.array([a, b])
            else:
                iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, target)
                self.arrays[f"{k}.x"] = np.asarray(iso.X_thresholds_, dtype=np.float64)
                self.arrays[f"{k}.y"] = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        out = np.empty_like(probabilities, dtype=np.float64)
        for k in range(self.n_classes):
            p = probabilities[:, k]
            if self.method == "sigmoid":
                a, b = self.arrays[f"{k}.ab"]
                out[:, k] = 1.0 / (1.0 + np.exp(-(a * _logit(p) + b)))
            else:
                out[:, k] = np.interp(p, self.arrays[f"{k}.x"], self.arrays[f"{k}.y"])
        totals = out.sum(axis=1, keepdims=True)
        # A row every map sends to 0 keeps its uncalibrated distribution rather than dividing by zero.
        return np.where(totals > 0, out / np.where(totals > 0, totals, 1.0), probabilities)

    def save(self, folder: Path) -> None:
        save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, str(folder / CALIBRATION_FILE),
                  metadata={"method": self.method, "classes": str(self.n_classes)})

    @classmethod
    def load(cls, method: str, n_classes: int, folder: Path) -> Calibrator:
        calibrator = cls(method, n_classes)
        calibrator.arrays = load_file(str(folder / CALIBRATION_FILE))
        needed = ["ab"] if method == "sigmoid" else ["x", "y"]
        missing = [f"{k}.{n}" for k in range(n_classes) for n in needed if f"{k}.{n}" not in calibrator.arrays]
        if missing:
            raise ValueError(f"{CALIBRATION_FILE} lacks {', '.join(missing[:3])}")
        return calibrator
