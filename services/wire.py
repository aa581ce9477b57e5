"""The internal wire between the services (docs/wire.md): what one side writes and the other reads,
declared once. The encoder serves its outputs listing and the classifier its version records with
these models; the gateway reads both with the same models, so it never imports another service.

Pure: pydantic and the contracts only. Any package may import it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts import TensorContract

__all__ = ["CONTRACT_HEADER", "INTERNAL_TOKEN_HEADER", "PROBABILITY_RANGE_TOLERANCE",
           "PROBABILITY_SUM_TOLERANCE", "EncoderOutput", "EncoderOutputs", "VersionRecord"]

CONTRACT_HEADER = "X-Seam-Contract"
"""On every encode answer: the id of the contract its vectors follow."""
INTERNAL_TOKEN_HEADER = "X-Seam-Internal-Token"
"""The service-to-service token the gateway sends (``GATEWAY_INTERNAL_TOKEN``)."""

# A row of probabilities sums to 1 within this, and no entry is below -this (float32 arithmetic).
PROBABILITY_SUM_TOLERANCE = 1e-3
PROBABILITY_RANGE_TOLERANCE = 1e-6


# --- the encoder's outputs listing (GET /v1/outputs) ---------------------------------------------------


class EncoderOutput(BaseModel):
    id: str = Field(min_length=1, description="Stable id of the contract; changes when the served model or its "
                    "settings change.")
    contract: TensorContract


class EncoderOutputs(BaseModel):
    """``GET /v1/outputs`` of the encoder: its model and one contract per output it serves; where it
    serves another precision than float32, the contract of each output asked in float32 too."""

    model: str
    outputs: dict[str, EncoderOutput]
    float32: dict[str, EncoderOutput] = Field(
        {}, description="Each output's contract when computed in float32 on request (\"precision\": \"float32\"); "
        "empty where the encoder serves float32 (the outputs above are those) or cannot.")


# --- the classifier's version records ------------------------------------------------------------------


class VersionRecord(BaseModel):
    """A classifier version record, as the gateway reads it: fields a classifier of another release may
    not send have defaults, unknown ones are kept (``extra``), and ``source`` stays raw (the classifier
    records it as given). The classifier's own schema narrows the types it writes."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    version: int
    estimator: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    input_contract: TensorContract
    source: Any = None
    task: str = Field("classification", description="classification (labels, probabilities) or regression (a value).")
    classes: list[str] = Field(default_factory=list, description="The classes, in the order of every probability row; "
                               "empty for a regressor.")
    preprocess: list[Any] = Field(default_factory=list, description="Fitted preprocessing steps, in order.")
    calibrate: str | None = None
    ood: dict[str, Any] | None = Field(None, description="The out-of-distribution summary kept with the version.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    data_sha256: str | None = None
    created_at: Any = None
    retained: dict[str, int] | None = Field(
        None, description="What training data the version kept: {'texts': N, 'reference_sample': M}; null: none."
    )

    @model_validator(mode="after")
    def _classes_of_a_classifier(self) -> VersionRecord:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"unknown task {self.task!r}")
        if self.task == "classification" and not self.classes:
            raise ValueError("a classifier's record lists at least one class")
        return self

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def identity(self) -> tuple[Any, ...]:
        """Tells two versions of one number apart (a model deleted and fitted again)."""
        return (self.name, self.version, str(self.created_at), self.data_sha256)

