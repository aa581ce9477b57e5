"""The Open Inference Protocol (``/v2``) over HTTP: one router for every service, built by
:func:`oip_router` from what the service supplies (:class:`ModelServer`: its name, how a model is
named and versioned in a path, and its metadata, readiness and inference), and the helpers its
inference reads and answers with. The data model and its codec are :mod:`services.oip` (pure).

Each model operation is served on both its unversioned path (``/v2/models/{name}...``) and its
versioned one (``/v2/models/{name}/versions/{version}...``), where ``version`` is None for the first.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' parameter types, given by
# the service at run time, from their annotations.
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from services import oip
from services.codecs import OIPError, OIPInvalidValue
from services.errors import InvalidInput, MalformedRequest

Operation = Callable[[Request, str, Any], Awaitable[Any]]


@dataclass(frozen=True)
class ModelServer:
    """What a service supplies to :func:`oip_router`.

    ``name_type`` and ``version_type`` annotate the ``{name}`` and ``{version}`` path parameters
    (``Annotated[..., Path(...)]``). ``ready(request)`` raises while the server cannot infer.
    ``metadata``, ``model_ready`` and ``infer`` take the request, the model's name and its version
    (None on the unversioned paths): the first returns :class:`oip.ModelMetadata`, the second raises
    when the model cannot infer, the third returns the response (:func:`inference_response`).
    Their docstrings describe the operations (on the unversioned paths) in the OpenAPI document."""

    server: str
    name_type: Any
    version_type: Any
    ready: Callable[[Request], Awaitable[Any]]
    metadata: Operation
    model_ready: Operation
    infer: Operation
    infer_body: dict[str, Any]


def oip_router(models: ModelServer) -> APIRouter:
    """``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, and each model's metadata, readiness and
    inference on both its unversioned and versioned paths."""
    router = APIRouter(prefix="/v2", tags=["open inference protocol"])

    @router.get("", response_model=oip.ServerMetadata, name="server_metadata")
    async def server_metadata() -> oip.ServerMetadata:
        return oip.ServerMetadata(name=models.server, version="0.1.0")

    async def live() -> dict[str, bool]:
        """The process is alive."""
        return {"live": True}

    async def ready(request: Request) -> dict[str, bool]:
        await models.ready(request)
        return {"ready": True}

    router.add_api_route("/health/live", live, methods=["GET"])
    router.add_api_route("/health/ready", ready, methods=["GET"], description=inspect.getdoc(models.ready))

    async def model_ready(request: Request, name: str, version: Any) -> oip.ModelReadiness:
        await models.model_ready(request, name, version)
        return oip.ModelReadiness(name=name, ready=True)

    both = {"response_model_exclude_none": True}
    for operation, on_version, method, suffix, handler, documented, options in (
        ("model_metadata", "version_metadata", "GET", "", models.metadata, models.metadata,
         {"response_model": oip.ModelMetadata, **both}),
        ("model_ready", "version_ready", "GET", "/ready", model_ready, models.model_ready,
         {"response_model": oip.ModelReadiness}),
        ("infer", "version_infer", "POST", "/infer", models.infer, models.infer,
         {"response_model": oip.InferenceResponse, "openapi_extra": models.infer_body, **both}),
    ):
        unversioned, versioned = _endpoints(handler, models.name_type, models.version_type)
        router.add_api_route(f"/models/{{name}}{suffix}", unversioned, methods=[method], name=operation,
                             description=inspect.getdoc(documented), **options)
        router.add_api_route(f"/models/{{name}}/versions/{{version}}{suffix}", versioned, methods=[method],
                             name=on_version, **options)
    return router


def _endpoints(handler: Operation, name_type: Any, version_type: Any) -> tuple[Callable, Callable]:
    """The operation with the path parameters FastAPI reads: without a version, and with one."""

    async def unversioned(name: name_type, request: Request):  # type: ignore[valid-type]
        return await handler(request, name, None)

    async def versioned(name: name_type, version: version_type, request: Request):  # type: ignore[valid-type]
        return await handler(request, name, version)

    return unversioned, versioned


async def read_inference(request: Request) -> oip.DecodedRequest:
    """The request's JSON object and input tensors (decoded off the event loop); 400 when malformed."""
    body = await request.body()
    try:
        length = oip.parse_header_length(request.headers.get(oip.HEADER_LENGTH))
        return await anyio.to_thread.run_sync(oip.decode_request, body, length)
    except OIPInvalidValue as exc:
        raise InvalidInput(str(exc)) from exc
    except OIPError as exc:
        raise MalformedRequest(str(exc)) from exc


def requested(decoded: oip.DecodedRequest, offered: list[str]) -> list[tuple[str, bool]]:
    try:
        return oip.requested_outputs(decoded.request, offered)
    except OIPError as exc:
        raise MalformedRequest(str(exc)) from exc


async def inference_response(
    model_name: str,
    model_version: str | None,
    decoded: oip.DecodedRequest,
    outputs: list[tuple[oip.OutputTensor, bool]],
    headers: dict[str, str] | None = None,
) -> Response:
    """JSON, or the JSON header followed by binary tensors (with ``Inference-Header-Content-Length``)."""
    body, header_length = await anyio.to_thread.run_sync(
        oip.encode_response, model_name, model_version, decoded.request.id, outputs
    )
    headers = dict(headers or {})
    if header_length is None:
        return Response(body, media_type="application/json", headers=headers)
    headers[oip.HEADER_LENGTH] = str(header_length)
    return Response(body, media_type=oip.OCTET_STREAM, headers=headers)


def input_tensor(decoded: oip.DecodedRequest, name: str, datatypes: tuple[str, ...], ndim: int) -> Any:
    """The named input, checked for datatype and rank; 400 naming what was expected otherwise."""
    if name not in decoded.tensors:
        raise MalformedRequest(
            f"missing input {name!r}; got {sorted(decoded.tensors)} (see the model's metadata for its inputs)"
        )
    datatype = decoded.datatypes[name]
    if datatype not in datatypes:
        raise MalformedRequest(f"input {name!r} must be {' or '.join(datatypes)}, got {datatype}")
    array = decoded.tensors[name]
    if array.ndim != ndim:
        raise MalformedRequest(f"input {name!r} must have {ndim} dimensions, got shape {list(array.shape)}")
    return array
