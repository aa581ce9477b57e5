"""Wire models of the gateway's public API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from services.compatibility import Mismatch
from services.contracts import TensorContract
from services.inputs import Text


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

    @model_validator(mode="after")
    def _one_label_per_text(self) -> TrainRequest:
        if self.labels is not None and self.targets is not None:
            raise ValueError("send labels (a classifier) or targets (a regressor), not both")
        if self.labels is None and self.targets is None:
            raise ValueError("send labels (one per text: a classifier) or targets (one number per text: a regressor)")
        given, what = (self.labels, "labels") if self.labels is not None else (self.targets, "targets")
        if len(self.texts) != len(given):
            raise ValueError(f"{len(self.texts)} texts but {len(given)} {what}: one label per text")
        return self


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


class LinkConsumer(BaseModel):
    model: str
    version: int
    estimator: str


class LinkReport(BaseModel):
    source: Any = Field(description="{'type': 'encoder', 'output'} or {'type': 'pipeline', 'name', 'version'}")
    producer: str | None = Field(description="'encoder <url> model <model> output <output>' or 'pipeline <name> v<N>'")
    consumer: LinkConsumer
    compatible: bool
    mismatches: list[Mismatch]


class PipelineReport(BaseModel):
    name: str
    version: int
    estimator: str
    classes: list[str]
    compatible: bool
    mismatches: list[Mismatch]
    chain: list[LinkReport] = Field(description="The encoder-fed link first, this pipeline last.")


class PipelineList(BaseModel):
    pipelines: list[PipelineReport]
