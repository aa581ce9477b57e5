"""Wire models of the encoder service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts import TensorContract
from services.inputs import Text

OutputName = Literal["embedding", "tokens", "probabilities"]


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["Where is my parcel?", "I was charged twice."], "output": "embedding"}]},
    )

    texts: list[Text] = Field(min_length=1, description="Texts to encode, each non-empty.")
    output: OutputName = Field("embedding", description="embedding | tokens | probabilities")


class EncodeResponse(BaseModel):
    model: str
    output: OutputName
    contract_id: str
    data: list = Field(description="embedding/probabilities: one vector per text; tokens: one list of vectors per text")
    truncated: list[bool] = Field(description="Per text: whether it was cut to the model window")
    token_counts: list[int] = Field(description="Per text: tokens encoded, special tokens included")


class OutputDescription(BaseModel):
    id: str = Field(description="Stable id of the contract; changes when the served model or its settings change.")
    contract: TensorContract


class OutputsResponse(BaseModel):
    model: str
    outputs: dict[str, OutputDescription]
