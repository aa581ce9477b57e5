"""Scores of predictions against the truth, in plain numpy: what a fit reports and what evaluate answers.

Each figure is defined as scikit-learn defines it (the tests compare them), without importing it: the
gateway evaluates with these and stays free of scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 10
_LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: rows binned by their highest probability into ``bins`` equal-width bins; the
    mean over bins of |accuracy - mean confidence|, weighted by the share of rows in each bin.
    ``truth`` holds class indices (columns of ``probabilities``)."""
    if len(truth) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == truth).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def reliability(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per confidence bin: its range, how many rows, their mean confidence and their accuracy (the
    reliability diagram's points; empty bins are left out)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                        "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return out


def classification_report(classes: Sequence[str], labels: Sequence[str], probabilities: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support, the confusion matrix (rows:
    true class, columns: predicted, both in ``classes`` order), log-loss and ECE. A label outside
    ``classes`` is the caller's to refuse."""
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[label] for label in labels], dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = (support > 0) | (predicted_count > 0)  # as scikit-learn's macro average: labels seen in either
    clipped = np.clip(probabilities, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "n_samples": int(len(truth)),
        "accuracy": float((predicted == truth).mean()) if len(truth) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": confusion.tolist(),
        "log_loss": float(-np.log(clipped[np.arange(len(truth)), truth]).mean()) if len(truth) else 0.0,
        "ece": expected_calibration_error(probabilities, truth),
        "reliability": reliability(probabilities, truth),
    }


def regression_report(targets: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """R² (scikit-learn's: 1 - SSres/SStot, 0.0 when the targets are constant and not all matched), MAE, RMSE."""
    targets = np.asarray(targets, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    residual = targets - values
    ss_res = float((residual**2).sum())
    ss_tot = float(((targets - targets.mean()) ** 2).sum()) if len(targets) else 0.0
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = 1.0 if ss_res == 0 else 0.0
    return {
        "n_samples": int(len(targets)),
        "r2": float(r2),
        "mae": float(np.abs(residual).mean()) if len(targets) else 0.0,
        "rmse": float(np.sqrt((residual**2).mean())) if len(targets) else 0.0,
    }
