"""Wire models of the gateway's public API."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, model_validator

from services.compatibility import Mismatch
from services.contracts import TensorContract
from services.inputs import Text


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
    labels: list[Text] = Field(min_length=1, description="One label per text.")
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

    @model_validator(mode="after")
    def _one_label_per_text(self) -> TrainRequest:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels: one label per text")
        for i, label in enumerate(self.labels):
            if not label.strip():  # " " and "  " would become two classes no one can tell apart
                raise ValueError(f"labels[{i}] is blank; every label needs at least one non-space character")
        return self


class TrainResponse(BaseModel):
    name: str
    version: int
    estimator: str
    params: dict[str, Any]
    feature: str
    source: dict[str, Any]
    input_contract: TensorContract
    classes: list[str]
    metrics: dict[str, Any]
    truncated_texts: int = Field(description="Texts cut to the encoder's window.")
    created_at: Any = None
    retained: dict[str, int] | None = Field(
        None, description="What the version kept: {'texts': N, 'reference_sample': M}; null: nothing."
    )


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["Where is my parcel?"]}]})

    texts: list[Text] = Field(min_length=1, description="Texts to classify, each non-empty.")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float] = Field(description="Per class, in the pipeline's class order.")
    truncated: bool = Field(description="Whether the text was cut to the encoder's window.")


class PredictResponse(BaseModel):
    name: str
    version: int
    predictions: list[Prediction]


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
