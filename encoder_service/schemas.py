"""Wire models of the encoder service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts import Kind
from services.inputs import Text


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["Where is my parcel?", "I was charged twice."], "output": "embedding"}]},
    )

    texts: list[Text] = Field(min_length=1, description="Texts to encode, each non-empty.")
    output: Kind = Field("embedding", description="embedding | tokens | probabilities")
    precision: Literal["float32"] | None = Field(
        None,
        description="float32: computed in float32, from the weights as loaded, whatever precision the encoder serves "
        "by default (slower where it serves bfloat16; the answer follows its float32 contract, listed under float32 "
        "in /v1/outputs). Unset: the served precision.",
    )


class EncodeResponse(BaseModel):
    model: str
    output: Kind
    contract_id: str
    data: list = Field(description="embedding/probabilities: one vector per text; tokens: one list of vectors per text")
    truncated: list[bool] = Field(description="Per text: whether it was cut to the model window")
    token_counts: list[int] = Field(description="Per text: tokens encoded, special tokens included")
