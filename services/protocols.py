"""HTTP glue for the foreign protocols the services also speak: the Open Inference Protocol (``/v2``)
and OpenAI's embeddings API. Like :mod:`services.web`, a few helpers and no app.

Errors stay problem+json everywhere (one handler, one status per error type); under these paths the
body also carries the member each protocol's clients read, so a refusal reaches their users as a message:

- OIP (``tritonclient`` raises ``InferenceServerException(body["error"])``): ``"error": "<detail>"``;
- OpenAI (the ``openai`` client reads ``body["error"]``): ``"error": {"message", "type", "param", "code"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import oip
from services.errors import PROBLEM_CONTENT_TYPE, InvalidInput, MalformedRequest

ErrorMember = Callable[[dict[str, Any]], Any]


def oip_error(problem: dict[str, Any]) -> str:
    return str(problem.get("detail") or problem.get("title") or "error")


def openai_error(problem: dict[str, Any]) -> dict[str, Any]:
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or "error"
    return {"message": oip_error(problem), "type": slug, "param": problem.get("field"), "code": slug}


class ProtocolErrorMiddleware:
    """Adds a protocol's ``error`` member to problem+json answers under given path prefixes."""

    def __init__(self, app: ASGIApp, members: dict[str, ErrorMember]) -> None:
        self.app = app
        self.members = members

    def _member_for(self, path: str) -> ErrorMember | None:
        return next((member for prefix, member in self.members.items() if path.startswith(prefix)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        member = self._member_for(scope.get("path", "")) if scope["type"] == "http" else None
        if member is None:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", ()))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(PROBLEM_CONTENT_TYPE.encode()):
                    held = message  # an error: hold the start until the body is rewritten
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = _with_member(b"".join(chunks), member)
                headers = [(k, v) for k, v in held.get("headers", ()) if k.lower() != b"content-length"]
                await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, rewrite)


def _with_member(body: bytes, member: ErrorMember) -> bytes:
    try:
        problem = json.loads(body)
    except ValueError:
        return body
    if not isinstance(problem, dict):
        return body
    problem["error"] = member(problem)
    return json.dumps(problem).encode()


# -- Open Inference Protocol bodies ----------------------------------------------------------------


async def read_inference(request: Request) -> oip.DecodedRequest:
    """The request's JSON object and input tensors (decoded off the event loop); 400 when malformed."""
    body = await request.body()
    try:
        length = oip.parse_header_length(request.headers.get(oip.HEADER_LENGTH))
        return await anyio.to_thread.run_sync(oip.decode_request, body, length)
    except oip.OIPInvalidValue as exc:
        raise InvalidInput(str(exc)) from exc
    except oip.OIPError as exc:
        raise MalformedRequest(str(exc)) from exc


def requested(decoded: oip.DecodedRequest, offered: list[str]) -> list[tuple[str, bool]]:
    try:
        return oip.requested_outputs(decoded.request, offered)
    except oip.OIPError as exc:
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


# -- OpenAPI -------------------------------------------------------------------------------------------


def inline_schema(model: type) -> dict[str, Any]:
    """A pydantic model's JSON schema with its ``$defs`` inlined: usable anywhere in an OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def request_body(model: type, examples: dict[str, Any], *, binary: bool = False, binary_type: str = oip.OCTET_STREAM) -> dict[str, Any]:
    """``openapi_extra`` documenting a body a route reads itself (JSON, or a binary encoding too)."""
    content: dict[str, Any] = {"application/json": {"schema": inline_schema(model), "examples": examples}}
    if binary:
        content[binary_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}
