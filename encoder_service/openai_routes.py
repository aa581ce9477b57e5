"""OpenAI-compatible embeddings on the encoder: ``POST /v1/embeddings`` and ``GET /v1/models``.

Point the official client at the encoder (``OpenAI(base_url="http://127.0.0.1:8001/v1", api_key="unused")``)
and ``client.embeddings.create(model=..., input=...)`` returns the encoder's ``embedding`` output. The
answer has OpenAI's shape; seam adds ``truncated`` to each item, because a text longer than the model's
window is cut to it, never silently. ``model`` must name the served model: another model's vectors live
in another space, and pretending otherwise is exactly the seam this project refuses to paper over.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from encoder_service.routes import BatcherDep, Runtime, Settings, check_limits
from encoder_service.loading import DEFAULT_MODEL_ID
from encoder_service.runtime import EncoderRuntime
from services.errors import InvalidInput, ModelNotFound
from services.inputs import encodable

router = APIRouter(prefix="/v1", tags=["openai"])

OUTPUT = "embedding"


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"model": DEFAULT_MODEL_ID, "input": ["Where is my parcel?", "I was charged twice."], "encoding_format": "float"}
        ]},
    )

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="A text or a list of texts. Token-id arrays are refused: ids are tokenizer-specific."
    )
    model: StrictStr = Field(description="The served model's id (GET /v1/models), or its last path segment.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(None, gt=0, description="Accepted only when equal to the model's width.")
    user: str | None = Field(None, description="Accepted and ignored.")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    truncated: bool = Field(description="seam's addition: whether the text was cut to the model window.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "seam"


class ModelCards(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def _accepted_names(runtime: EncoderRuntime) -> list[str]:
    short = runtime.model_id.rstrip("/").rsplit("/", 1)[-1]
    return [runtime.model_id] if short == runtime.model_id else [runtime.model_id, short]


def _texts(body: EmbeddingsRequest) -> list[str]:
    if isinstance(body.input, str):
        body.input = [body.input]
    if body.input and not isinstance(body.input[0], str):
        raise InvalidInput(
            "input holds token ids; this encoder takes text only (ids of another tokenizer would mean other tokens)",
            field="input",
        )
    if not body.input:
        raise InvalidInput("input is an empty list; send at least one text", field="input")
    texts: list[str] = list(body.input)  # type: ignore[arg-type]
    for i, text in enumerate(texts):
        try:
            encodable(text)
        except ValueError as exc:  # a lone surrogate: a tokenizer would fail on it (500)
            raise InvalidInput(f"input[{i}] is {exc}; send UTF-8 text", field="input", index=i) from None
    return texts


def _encode_item(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return vector.astype(np.float32).tolist()


@router.post("/embeddings", response_model=EmbeddingsResponse)
async def embeddings(body: EmbeddingsRequest, runtime: Runtime, batcher: BatcherDep, settings: Settings) -> EmbeddingsResponse:
    """The ``embedding`` output of each text, in OpenAI's response shape, with token usage."""
    names = _accepted_names(runtime)
    if body.model not in names:
        raise ModelNotFound(f"this encoder serves {runtime.model_id!r}, not {body.model!r}; ask for model {names[0]!r}",
                            field="model", served=runtime.model_id)
    output = runtime.output(OUTPUT)
    if body.dimensions is not None and body.dimensions != output.contract.dim:
        raise InvalidInput(
            f"dimensions={body.dimensions}: {runtime.model_id} embeddings are {output.contract.dim} wide and are not shortened",
            field="dimensions",
        )
    texts = _texts(body)
    check_limits(texts, settings)
    items, vectors = await batcher.encode(texts, OUTPUT)
    tokens = sum(item.n_tokens for item in items)
    data = [
        EmbeddingItem(index=i, embedding=_encode_item(v, body.encoding_format), truncated=item.truncated)
        for i, (v, item) in enumerate(zip(vectors, items))
    ]
    return EmbeddingsResponse(data=data, model=runtime.model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


@router.get("/models", response_model=ModelCards)
async def models(runtime: Runtime) -> ModelCards:
    """OpenAI's model list: the one model this encoder serves."""
    return ModelCards(data=[ModelCard(id=runtime.model_id)])
