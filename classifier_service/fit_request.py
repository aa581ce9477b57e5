"""Every check a fit can fail before any training, made on the request alone: its free-form fields,
the estimator and its parameters, preprocessing steps, features, labels or targets, and the size of the
model they would make. The answer is the :class:`~classifier_service.training.FitJob` a worker trains.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from classifier_service import features as feature_checks
from classifier_service import retained as retained_data
from classifier_service.calibration import check_method
from classifier_service.estimator_types import CLASSIFICATION, REGRESSION
from classifier_service.estimators import resolve
from classifier_service.preprocess import Preprocessor, parse_steps
from classifier_service.schemas import FitInput
from classifier_service.settings import ClassifierSettings
from classifier_service.training import FitJob
from services.errors import InvalidInput, PayloadTooLarge


def prepare_fit(name: str, request: FitInput, settings: ClassifierSettings) -> FitJob:
    """Every check a fit can fail before any training: estimator, parameters, steps, features,
    labels or targets, and the size of the model they would make."""
    fields = request.fields
    for field, value in (("source", fields.source), ("params", fields.params)):
        _check_free_form(field, value, max_depth=settings.max_source_depth, max_bytes=settings.max_source_bytes)
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
    if rows > settings.max_fit_rows:
        raise PayloadTooLarge(
            f"{rows} rows, at most {settings.max_fit_rows} per fit (CLASSIFIER_MAX_FIT_ROWS).",
            limit_rows=settings.max_fit_rows,
        )
    given = fields.labels if fields.labels is not None else fields.targets
    what = "labels" if task == CLASSIFICATION else "targets"
    if rows and len(given) != rows:
        raise InvalidInput(f"{len(given)} {what} for {rows} rows of features: one per row.")
    feature_checks.validate(tensor, contract, subject=subject, consumer=consumer, max_rows=settings.max_fit_rows)
    vectors = int(tensor.values.shape[0]) if hasattr(tensor, "values") else rows
    Preprocessor(steps).check(contract.dim, vectors)
    width = Preprocessor(steps).output_dim(contract.dim)
    if task == REGRESSION:
        labels = _targets(fields.targets)
        if len(labels) < 2:
            raise InvalidInput(f"A regressor needs at least two rows; got {len(labels)}.")
        outputs = 1
    else:
        _check_labels(fields.labels, settings.max_label_chars)
        labels = np.asarray(fields.labels, dtype=str)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise InvalidInput(f"A classifier needs at least two classes; every label is {str(classes[0])!r}.")
        estimator.check_labels(labels)
        outputs = len(classes)
    estimator.check_size(params, dim=width, classes=outputs, limit=settings.max_model_parameters)
    if fields.texts is not None and len(fields.texts) != rows:
        raise InvalidInput(f"{len(fields.texts)} texts for {rows} rows of features: one text per row, or none.")
    return FitJob(
        name, estimator, params, contract, fields.source, tensor, labels,
        feature_checks.data_sha256(tensor, list(given), contract.kind), task, steps, calibrate,
        retained_data.Retained(list(fields.texts), fields.reference_sample) if fields.texts is not None else None,
    )

def _check_labels(labels: list[str], limit: int) -> None:
    """Every label names a class: some visible character, at most ``max_label_chars`` characters."""
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
