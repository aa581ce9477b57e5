"""The classifier's wire models (docs/wire.md, classifier section) and the two body encodings.

Fit and predict bodies arrive as JSON, or as a binary tensor frame (``services.codecs``) carrying the
features as its tensor and the other fields in its ``meta``. Both decode to the same request object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import JSONResponse, Response

from services.codecs import BINARY_CONTENT_TYPE, CodecError, Tensor, decode_binary, encode_binary
from services.contracts import TensorContract
from services.errors import MalformedRequest
from services import wire
from services.inputs import Text, encodable_json

# -- requests -------------------------------------------------------------------------------------


WireFeatures = Tensor | list[Any]


class FitFields(BaseModel):
    """Everything a fit needs besides the features (a binary frame's ``meta``)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Text] | None = Field(None, description="One label per row of features (a classifier).")
    targets: list[Any] | None = Field(
        None, description="Instead of labels: one finite number per row (a regressor: a score, a rating, a price)."
    )
    contract: TensorContract = Field(description="The producer's output contract the features follow.")
    estimator: str | None = Field(None, description="Estimator name; default: the one for the contract's kind.")
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters.")
    preprocess: list[Any] = Field(
        default_factory=list,
        description='Steps fitted on the training features and applied before the estimator: "standardize", '
        '{"pca": <components>}, "l2_normalize".',
    )
    calibrate: str | None = Field(None, description='"sigmoid" or "isotonic": calibrated probabilities (classifiers).')
    source: dict[str, Any] | None = Field(
        None, description="Where the features come from; recorded as given, for the gateway's chains."
    )
    texts: list[Text] | None = Field(
        None, description="The training texts, one per row: kept with the version (never logged), for measured "
        "acceptance and refits. Absent: nothing is kept.",
    )
    reference_sample: int = Field(
        0, ge=0, description="Rows of the texts kept as the reference sample (stratified by label), with the "
        "probabilities the fitted version gives them.",
    )

    # Both are recorded and echoed back: they must encode as UTF-8 (no lone surrogates).
    encodable = field_validator("params", "source")(encodable_json)


class FitRequest(FitFields):
    """A JSON fit body: dense rows ``[[...], ...]``, or for tokens one list of vectors per row."""

    features: list[Any]


class PredictFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contract: TensorContract | None = Field(
        None, description="Optional: the producer's contract, checked against the model's input contract."
    )


class PredictRequest(PredictFields):
    features: list[Any]


@dataclass
class FitInput:
    """A decoded fit body: ``features`` is a JSON list, or the tensor of a binary frame."""

    fields: FitFields
    features: WireFeatures


@dataclass
class PredictInput:
    fields: PredictFields
    features: WireFeatures


def _validated(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from exc


def _decode(body: bytes, binary: bool, whole: type[BaseModel], fields: type[BaseModel]) -> tuple[Any, WireFeatures]:
    if binary:
        try:
            frame = decode_binary(body)
        except CodecError as exc:
            raise MalformedRequest(f"The body is not a valid tensor frame: {exc}") from exc
        return _validated(fields, frame.meta), frame.tensor
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedRequest(f"The body is not valid JSON: {exc}") from exc
    request = _validated(whole, data)
    return fields.model_validate(request.model_dump(exclude={"features"})), request.features


def parse_fit(body: bytes, binary: bool) -> FitInput:
    fields, features = _decode(body, binary, FitRequest, FitFields)
    return FitInput(fields=fields, features=features)


def parse_predict(body: bytes, binary: bool) -> PredictInput:
    fields, features = _decode(body, binary, PredictRequest, PredictFields)
    return PredictInput(fields=fields, features=features)


# -- responses ------------------------------------------------------------------------------------


class Metrics(BaseModel):
    """Training metrics. Estimators add their own (e.g. ``holdout_accuracy``, ``epochs``); a regressor
    reports ``train_r2``, ``cv_r2``, ``cv_mae``, ``cv_rmse`` instead of accuracies; a calibrated
    classifier ``ece_before`` and ``ece_after`` (out of fold)."""

    model_config = ConfigDict(extra="allow")

    train_accuracy: float | None = None
    cv_accuracy: float | None = Field(None, description="Mean stratified k-fold accuracy; null when skipped.")
    cv_folds: int | None
    n_samples: int
    cv_skipped_reason: str | None = None


class VersionRecord(wire.VersionRecord):
    """A version record as this classifier writes it (``services.wire.VersionRecord``, narrowed)."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    estimator: str
    params: dict[str, Any]
    source: dict[str, Any] | None = None
    classes: list[str] = Field(description="The classes, in the order of every probability row; empty for a regressor.")
    preprocess: list[dict[str, Any]] = Field(default_factory=list, description="Fitted preprocessing steps, in order.")
    metrics: Metrics
    data_sha256: str
    created_at: str


class LatestRecord(VersionRecord):
    """``GET /v1/models/{name}/latest``: the latest record, with the model's aliases (so that one read tells
    the gateway which version a plain predict serves)."""

    aliases: dict[str, int] = Field(default_factory=dict, description="The model's aliases: {'production': 3}.")


class SkippedEntry(BaseModel):
    path: str = Field(description="Relative to the store directory.")
    reason: str


class DamagedEntry(BaseModel):
    version: int
    reason: str = Field(description="Why its files cannot be served.")


class ModelSummary(BaseModel):
    name: str
    latest: VersionRecord = Field(description="The newest version that loads (see ``damaged`` for newer ones).")
    versions: list[int]
    damaged: list[DamagedEntry] = Field(default_factory=list, description="Versions whose files are damaged: never served.")


class ModelList(BaseModel):
    models: list[ModelSummary]
    skipped: list[SkippedEntry] = Field(description="Store entries that were not loaded, and why.")


class ModelDetail(BaseModel):
    name: str
    latest: VersionRecord | None = Field(description="The latest version; null when it is damaged.")
    versions: list[VersionRecord]
    damaged: list[DamagedEntry] = Field(default_factory=list, description="Versions whose files are damaged: never served.")


class Prediction(BaseModel):
    label: str | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = Field(None, description="A regressor's prediction.")
    ood: float | None = Field(None, description="Out-of-distribution score in [0, 1]; null for versions without a summary.")
    in_distribution: bool | None = None


class PredictResponse(BaseModel):
    name: str
    version: int
    task: str = "classification"
    classes: list[str]
    predictions: list[Prediction]


class Readiness(BaseModel):
    status: str
    models: int | None = Field(None, description="Models loaded (with the internal token only, when one is set).")
    skipped: list[SkippedEntry] | None = Field(
        None, description="Store entries not loaded, and why (with the internal token only, when one is set).")


def render_prediction(
    name: str,
    version: int,
    classes: list[str],
    outputs: np.ndarray,
    binary: bool,
    *,
    task: str = "classification",
    ood: np.ndarray | None = None,
    threshold: float = 1.0,
) -> Response:
    """The predict response: JSON rows, or a dense frame (probabilities in ``classes`` order; a
    regressor's values as one column), with ``ood`` / ``in_distribution`` per row (the frame's meta)."""
    scores = None if ood is None else [float(s) for s in ood]
    inside = None if scores is None else [s < threshold for s in scores]
    if task == "regression":
        values = np.asarray(outputs, dtype=np.float64).reshape(-1)
        if binary:
            meta = {"name": name, "version": version, "task": task, "classes": [], "ood": scores, "in_distribution": inside,
                    "ood_threshold": threshold}
            return Response(encode_binary(values.astype(np.float32)[:, None], meta), media_type=BINARY_CONTENT_TYPE)
        rows = [{"value": v} for v in values.tolist()]
    else:
        winners = outputs.argmax(axis=1)
        labels = [classes[i] for i in winners]
        if binary:
            meta = {"name": name, "version": version, "classes": classes, "labels": labels, "ood": scores,
                    "in_distribution": inside, "ood_threshold": threshold}
            return Response(encode_binary(outputs.astype(np.float32), meta), media_type=BINARY_CONTENT_TYPE)
        rows = [{"label": label, "probabilities": dict(zip(classes, row))} for label, row in zip(labels, outputs.tolist())]
    if scores is not None:
        for row, score, ok in zip(rows, scores, inside):
            row["ood"], row["in_distribution"] = score, ok
    return JSONResponse({"name": name, "version": version, "task": task, "classes": classes, "predictions": rows})

