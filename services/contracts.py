"""Tensor contracts: what a producer emits and what a consumer was fitted on.

An output contract (encoder side) and an input contract (classifier side) have the same shape, so
one pure function, :func:`services.compatibility.check`, compares them.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["embedding", "tokens", "probabilities"]
DType = Literal["float32", "bfloat16", "float16"]
KINDS: tuple[str, ...] = get_args(Kind)

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

# Fixed canary sentences: their vectors are the fingerprint of an embedding space. Two encoders of
# the same width but different weights (a swap, a fine-tune, a quantisation) give other vectors.
CANARY_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Where is my parcel? It should have arrived yesterday.",
    "I was charged twice for the same invoice.",
    "Quantum chromodynamics describes the strong interaction.",
)


def is_valid_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.fullmatch(name))


class EmbeddingSpace(BaseModel):
    """Where vectors live: two encoders agree here only if their vectors can be used interchangeably."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(description="Model name or folder the encoder serves, e.g. all-MiniLM-L6-v2.")
    weights_sha256: str = Field(description="SHA-256 of the weight files.")
    pooling: str = Field(description="Pooling that turns token vectors into one vector: mean, cls, max, ...")
    normalized: bool = Field(description="Whether pooled vectors are L2-normalised.")
    max_tokens: int = Field(gt=0, description="The model window; longer texts are truncated.")
    fingerprint: list[list[float]] = Field(
        default_factory=list,
        description="Vectors of the canary sentences (services.contracts.CANARY_TEXTS) in this space.",
    )


class TensorContract(BaseModel):
    """The shape, type and meaning of a tensor that crosses a seam."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    dim: int = Field(gt=0, description="Width of one vector (embedding, token) or number of classes.")
    dtype: DType = "float32"
    space: EmbeddingSpace | None = Field(
        default=None, description="The embedding space; absent for probabilities of a pipeline."
    )
    labels: list[str] | None = Field(
        default=None, description="Column order of a probability distribution (probabilities only)."
    )

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> TensorContract:
        if self.kind == "probabilities":
            if not self.labels:
                raise ValueError("a probabilities contract needs its labels, in column order")
            if len(self.labels) != self.dim:
                raise ValueError(f"{len(self.labels)} labels for dim {self.dim}: one label per column")
            if len(set(self.labels)) != len(self.labels):
                # {label: p} per prediction would silently drop a column that shares its name.
                raise ValueError(f"duplicate labels in {self.labels}: each column needs its own label")
        elif self.labels is not None:
            raise ValueError(f"labels belong to probabilities contracts, not to {self.kind}")
        return self
