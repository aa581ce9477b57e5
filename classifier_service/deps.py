"""What the routes need, as ``Annotated[..., Depends(...)]`` aliases: the runtime, decoded bodies
(JSON or binary frame, parsed off the event loop) and the response encoding. The internal token is
checked before any route, by ``services.http.auth`` (installed by ``build_app``)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator

from classifier_service.examples import NAME_EXAMPLES
from classifier_service.runtime import ClassifierRuntime
from classifier_service.schemas import FitInput, PredictInput, parse_fit, parse_predict
from classifier_service.settings import ClassifierSettings
from services.codecs import BINARY_CONTENT_TYPE
from services.contracts import MODEL_NAME_PATTERN
from services.errors import NotReady


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread, a round trip
# per request for what is an attribute lookup.
async def get_settings(request: Request) -> ClassifierSettings:
    return request.app.state.settings


async def get_runtime(request: Request) -> ClassifierRuntime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise NotReady("The model store is still loading.")
    return runtime


async def _body(request: Request) -> tuple[bytes, bool]:
    """The body, and whether it is a tensor frame (else JSON). Its media type was checked on the way in
    (``services.http.admission``: 415 for what no route reads)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return await request.body(), media_type == BINARY_CONTENT_TYPE


async def read_fit(request: Request) -> FitInput:
    body, binary = await _body(request)
    return await anyio.to_thread.run_sync(parse_fit, body, binary)


# A small body parses in less time than the round trip to a worker thread takes (~0.2 ms here).
INLINE_PARSE_BYTES = 32 * 1024


async def read_predict(request: Request) -> PredictInput:
    body, binary = await _body(request)
    if len(body) <= INLINE_PARSE_BYTES:
        return parse_predict(body, binary)
    return await anyio.to_thread.run_sync(parse_predict, body, binary)


def whole_number(value: object) -> object:
    """A version in a URL is written in digits: ``1.0``, `` 1`` or ``1e0`` is refused, not read as 1."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError(f"a version is a whole number written in digits, like 3; got {value!r}")
    return value


async def wants_binary(request: Request) -> bool:
    return BINARY_CONTENT_TYPE in request.headers.get("accept", "")


Runtime = Annotated[ClassifierRuntime, Depends(get_runtime)]
ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="Model name.", openapi_examples=NAME_EXAMPLES)]
VersionQuery = Annotated[
    int | None, Query(ge=1, description="A version number; default: the latest."), BeforeValidator(whole_number)
]
VersionPath = Annotated[int, Path(ge=1, description="A version number."), BeforeValidator(whole_number)]
FitBody = Annotated[FitInput, Depends(read_fit)]
PredictBody = Annotated[PredictInput, Depends(read_predict)]
BinaryResponse = Annotated[bool, Depends(wants_binary)]
