"""Wire models of the gateway's public API. The routes send these models as they are (fields never set
are left out, as a regressor's prediction has no label), so ``response_model`` is what is sent."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from services.compatibility import Mismatch
from services.contracts import TensorContract
from services.inputs import Text
from services.wire import VersionRecord

if TYPE_CHECKING:
    from gateway.runtime import Predictions


def _digits(value: Any) -> Any:
    """A query's whole number as digits only: ``1.0``, ``true``, `` 1`` or ``1e3`` are refused, not read as 1."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]+", value):
        raise ValueError(f"{value!r} is not a whole number: write the version in digits (1, 2, ...)")
    return value


Version = Annotated[int, BeforeValidator(_digits)]
"""A version number in a query: strict (digits only), the range is the route's."""


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "texts": ["Where is my parcel?", "I was charged twice."],
                    "labels": ["shipping", "billing"],
                    "estimator": "logistic_regression",
                    "feature": "embedding",
                }
            ]
        },
    )

    texts: list[Text] = Field(min_length=1, description="Training texts, each non-empty.")
    labels: list[Text] | None = Field(None, min_length=1, description="One label per text (a classifier).")
    targets: list[Any] | None = Field(
        None, min_length=1, description="Instead of labels: one number per text (a regressor: ridge, mlp_regressor, ...)."
    )
    preprocess: list[Any] = Field(
        default_factory=list, description='Steps fitted with the model: "standardize", {"pca": 64}, "l2_normalize".'
    )
    calibrate: StrictStr | None = Field(None, description='"sigmoid" or "isotonic": calibrated probabilities.')
    estimator: StrictStr | None = Field(
        None,
        description="logistic_regression, gaussian_nb, attention_pooling, ... (what the classifier offers); "
        "default: the classifier's choice for the feature's kind.",
    )
    feature: StrictStr = Field(
        "embedding",
        description="embedding | tokens | probabilities (encoder outputs) | pipeline:<name> (that pipeline's probabilities)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters.")
    encoder: StrictStr | None = Field(
        None, description="The registered encoder to fit through (GET /v1/encoders); default: the first listed. "
        "Recorded in the version's source. Ignored for pipeline:<name> features (the base's encoder serves them).",
    )
    retain_texts: bool = Field(
        True, description="Keep the training texts with the version in the classifier's store (never logged), with "
        "a reference sample that lets an encoder computing the same space differently be accepted by measurement.",
    )


class TrainResponse(BaseModel):
    name: str
    version: int
    estimator: str
    params: dict[str, Any]
    feature: str
    source: dict[str, Any]
    input_contract: TensorContract
    task: str = "classification"
    classes: list[str]
    preprocess: list[Any] = []
    calibrate: str | None = None
    metrics: dict[str, Any]
    truncated_texts: int = Field(description="Texts cut to the encoder's window.")
    created_at: Any = None
    retained: dict[str, int] | None = Field(
        None, description="What the version kept: {'texts': N, 'reference_sample': M}; null: nothing."
    )

    @classmethod
    def of(cls, record: VersionRecord, feature: str, truncated: int) -> TrainResponse:
        return cls(
            name=record.name, version=record.version, estimator=record.estimator, params=record.params, feature=feature,
            source=record.source, input_contract=record.input_contract, task=record.task, classes=record.classes,
            preprocess=record.preprocess, calibrate=record.calibrate, metrics=record.metrics, truncated_texts=truncated,
            created_at=record.created_at, retained=record.retained,
        )


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["Where is my parcel?"]}]})

    texts: list[Text] = Field(min_length=1, description="Texts to classify, each non-empty.")


class Prediction(BaseModel):
    label: str | None = Field(None, description="A classifier's predicted class.")
    probabilities: dict[str, float] | None = Field(None, description="Per class, in the pipeline's class order.")
    value: float | None = Field(None, description="A regressor's prediction.")
    truncated: bool = Field(description="Whether the text was cut to the encoder's window.")
    ood: float | None = Field(
        None, description="Out-of-distribution score in [0, 1]: the share of training rows closer to their class "
        "than this text is to its nearest (the highest over a chain's links)."
    )
    in_distribution: bool | None = Field(None, description="ood below the classifier's CLASSIFIER_OOD_THRESHOLD.")


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["Where is my parcel?", "I was charged twice."], "labels": ["shipping", "billing"]}]})

    texts: list[Text] = Field(min_length=1, description="Texts with known answers, each non-empty.")
    labels: list[Text] | None = Field(None, description="One true class per text (a classifier).")
    targets: list[Any] | None = Field(None, description="One true number per text (a regressor).")


class EvaluateResponse(BaseModel):
    name: str
    version: int
    task: str
    metrics: dict[str, Any] = Field(
        description="A classifier: accuracy, macro_f1, per_class (precision, recall, f1, support), classes, "
        "confusion_matrix (rows: true, columns: predicted, in the version's class order), log_loss, ece, "
        "reliability. A regressor: r2, mae, rmse."
    )
    ood: dict[str, Any] | None = Field(description="Mean out-of-distribution score and share of the texts.")


class DriftReport(BaseModel):
    name: str
    version: int
    window: int = Field(description="Predictions kept per pipeline in this gateway (GATEWAY_DRIFT_WINDOW).")
    predictions: int = Field(description="Predictions in the window now.")
    out_of_distribution_share: float | None
    mean_score: float | None
    threshold: float | None
    baseline: dict[str, Any] = Field(description="What training-like traffic gives: mean score 0.5, share 1 - threshold.")
    shift: float | None = Field(description="mean_score - the baseline's.")


class PredictResponse(BaseModel):
    name: str
    version: int
    predictions: list[Prediction]

    @classmethod
    def of(cls, result: Predictions) -> PredictResponse:
        """Per text, a classifier's label and probabilities per class, or a regressor's value; the
        out-of-distribution score where the version has a summary."""
        predictions, classes = [], result.classes
        for row in result.rows:
            scored = {} if row.ood is None else {"ood": row.ood, "in_distribution": row.in_distribution}
            if row.value is not None:
                predictions.append(Prediction(value=row.value, truncated=row.truncated, **scored))
            else:
                predictions.append(Prediction(label=row.label, probabilities=dict(zip(classes, row.probabilities)),
                                              truncated=row.truncated, **scored))
        return cls(name=result.name, version=result.version, predictions=predictions)


class LinkConsumer(BaseModel):
    model: str
    version: int
    estimator: str


class Acceptance(BaseModel):
    accepted: str = Field(description="exact: every contract field equal; measured: the same space computed "
                          "differently, accepted on the version's reference sample.")
    agreement: float | None = Field(None, description="Measured: share of the sample whose label is unchanged.")
    max_probability_change: float | None = None
    sample_size: int | None = None


class EncoderCandidate(BaseModel):
    encoder: str
    url: str
    producer: str
    acceptance: Acceptance | None
    mismatches: list[Mismatch]
    measurement: dict[str, Any] | None = Field(None, description="agreement, max_probability_change, sample_size, "
                                               "min_agreement, when measured and refused")
    unavailable: str | None = Field(None, description="Why its contracts could not be read.")


class LinkReport(BaseModel):
    source: Any = Field(description="{'type': 'encoder', 'output', 'encoder'} or {'type': 'pipeline', 'name', 'version'}")
    producer: str | None = Field(description="'encoder <url> model <model> output <output>' or 'pipeline <name> v<N>'")
    consumer: LinkConsumer
    compatible: bool
    mismatches: list[Mismatch]
    encoder: str | None = Field(None, description="An encoder-fed link: the registered encoder serving it.")
    acceptance: Acceptance | None = Field(None, description="How the link was accepted; null when refused.")
    encoders: list[EncoderCandidate] | None = Field(
        None, description="A refused encoder-fed link: every registered encoder weighed, and why it does not fit."
    )


class PipelineReport(BaseModel):
    name: str
    version: int
    estimator: str
    classes: list[str]
    compatible: bool
    mismatches: list[Mismatch]
    chain: list[LinkReport] = Field(description="The encoder-fed link first, this pipeline last.")
    aliases: dict[str, int] = Field(default_factory=dict, description="The pipeline's aliases; the report is of the "
                                    "version a plain predict serves: production's when set, else the latest.")


class PipelineList(BaseModel):
    pipelines: list[PipelineReport]


class EncoderOutputSummary(BaseModel):
    id: str = Field(description="The contract id (X-Seam-Contract of its encode answers).")
    kind: str
    dim: int
    dtype: str


class EncoderStatus(BaseModel):
    name: str
    url: str
    ready: bool
    model: str | None
    outputs: dict[str, EncoderOutputSummary]
    error: str | None = Field(None, description="Why it is not ready.")


class EncoderList(BaseModel):
    encoders: list[EncoderStatus] = Field(description="In registered order; the first is the default for training.")
