"""HTTP glue for the foreign protocols the services also speak: the Open Inference Protocol (``/v2``,
its router: :mod:`services.http.oip`) and OpenAI's embeddings API: their error member, and the
OpenAPI description of a body a route reads itself.

Errors stay problem+json everywhere (one handler, one status per error type); under these paths the
body also carries the member each protocol's clients read, so a refusal reaches their users as a message:

- OIP (``tritonclient`` raises ``InferenceServerException(body["error"])``): ``"error": "<detail>"``;
- OpenAI (the ``openai`` client reads ``body["error"]``): ``"error": {"message", "type", "param", "code"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import oip
from services.errors import PROBLEM_CONTENT_TYPE

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
