"""HTTP glue every service installs the same way: problem+json for every error, a request body
cap, and health routes. A few functions, not an app: ``services.http.app.build_app`` installs them."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.http.bodies import json_depth, json_part
from services.errors import (PROBLEM_BASE, PROBLEM_CONTENT_TYPE, MalformedRequest, PayloadTooLarge, RequestTimeout,
                             SeamError)
from services.http.requestid import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger("seam")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
HEADER_LENGTH_KEY = b"inference-header-content-length"  # the Open Inference Protocol's binary bodies
_SCAN_INLINE_BYTES = 256 * 1024  # larger JSON is scanned for depth in a worker thread, off the event loop
_HTTP_TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed", 413: "Payload too large"}


class ProblemResponse(JSONResponse):
    """problem+json, escaped to ASCII: a detail that quotes the caller's input (a lone surrogate, say)
    always renders, where plain UTF-8 encoding would fail on it."""

    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    rid = current_request_id()
    if rid is not None:  # named in the body and the header, even where no middleware adds it (a 500)
        problem = {**problem, "request_id": problem.get("request_id") or rid}
        headers = {**(headers or {}), REQUEST_ID_HEADER: rid}
    return ProblemResponse(jsonable_encoder(problem), status_code=problem["status"], headers=headers)


def _describe_validation_error(err: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    return {"field": ".".join(loc) or "body", "message": err.get("msg", "invalid"), "type": err.get("type")}


async def _seam_error(request: Request, exc: SeamError) -> JSONResponse:
    if exc.status >= 500:
        log.warning("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.detail)
    return problem_response(exc.to_problem(request.url.path), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_describe_validation_error(e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        status, title, slug = 400, "Malformed request", "malformed-request"
        detail = "The body is not valid JSON: " + "; ".join(e["message"] for e in errors)
    else:
        status, title, slug = 422, "Invalid input", "invalid-input"
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    problem = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail,
               "instance": request.url.path, "errors": errors}
    return problem_response(problem)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI's "error parsing the body"
        detail = (f"The body is not valid UTF-8 ({cause.reason} at byte {cause.start}); "
                  "send JSON encoded as UTF-8.")
        problem = {"type": PROBLEM_BASE + "malformed-request", "title": "Malformed request", "status": 400,
                   "detail": detail, "instance": request.url.path}
        return problem_response(problem)
    problem = {
        "type": "about:blank",
        "title": _HTTP_TITLES.get(exc.status_code, "Error"),
        "status": exc.status_code,
        "detail": str(exc.detail),
        "instance": request.url.path,
    }
    return problem_response(problem, getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    problem = {"type": PROBLEM_BASE + "internal", "title": "Internal error", "status": 500,
               "detail": f"{type(exc).__name__}: the service failed unexpectedly; see its log.",
               "instance": request.url.path}
    # Starlette re-raises the error once this answer is sent, and uvicorn then drops the connection:
    # say so, so that a keep-alive client does not send its next request into a closed socket.
    return problem_response(problem, {"Connection": "close"})


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some problems add fields (mismatches, errors, upstream, ...).",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string", "description": "The request's X-Request-ID: quote it in a bug report."},
    },
}


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI schema says what errors really look like: FastAPI documents its own 422 body
    (``{"detail": [...]}``), which these services never send; every error is problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {"description": "Error (RFC 9457 problem details)",
                   "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = problem
                responses.setdefault("default", problem)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_problem_handlers(app: FastAPI) -> None:
    """Every error a route can raise leaves as problem+json, with one status per error type."""
    app.add_exception_handler(SeamError, _seam_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    _document_problems(app)


class BodyLimitMiddleware:
    """Reads a request body in full before the app sees it, and refuses it, before any work, when it is

    - over ``max_bytes``: 413, from ``Content-Length`` or as soon as the bytes received pass it;
    - not all in after ``timeout_s`` (a slow sender): 408, so that a client trickling its body holds
      a connection at most that long, and no in-flight slot meanwhile (the limit sits inside this);
    - JSON nested deeper than ``max_depth`` (the whole body, or the JSON header of a binary one): 400.

    Methods without a body (GET, DELETE...) pass through untouched. ``prefix`` names the settings
    (``ENCODER_`` ...) in the answers."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None, max_depth: int | None = None,
                 prefix: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_depth = max_depth
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(self._too_large(), scope, receive, send)
            return
        try:
            with anyio.fail_after(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            error = RequestTimeout(
                f"The request body was not all received within {self.timeout_s:g} s "
                f"({self.prefix}BODY_TIMEOUT_S); send it at once, or raise the setting for slow links.",
                limit_s=self.timeout_s,
            )
            await self._refuse(error, scope, receive, send)
            return
        except PayloadTooLarge as error:
            await self._refuse(error, scope, receive, send)
            return
        if body is None:  # the client went away
            return
        if self.max_depth is not None:
            content_type = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
            length = headers.get(HEADER_LENGTH_KEY)
            part = json_part(body, content_type, length.decode("latin-1") if length is not None else None)
            if len(part) > _SCAN_INLINE_BYTES:
                depth = await anyio.to_thread.run_sync(json_depth, part, self.max_depth)
            else:
                depth = json_depth(part, self.max_depth)
            if depth:
                error = MalformedRequest(
                    f"The body nests JSON {depth} levels deep; the limit is {self.max_depth} "
                    f"({self.prefix}MAX_JSON_DEPTH): send flatter JSON.",
                    depth=depth, limit=self.max_depth,
                )
                await problem_response(error.to_problem(scope.get("path")))(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body exceeds {self.max_bytes} bytes ({self.prefix}MAX_BODY_BYTES); "
            "send fewer or shorter texts per request.",
            limit_bytes=self.max_bytes,
        )

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _refuse(error: SeamError, scope: Scope, receive: Receive, send: Send) -> None:
        # The body is not read to its end: the connection cannot carry another request.
        headers = {**error.headers, "Connection": "close"}
        await problem_response(error.to_problem(scope.get("path")), headers)(scope, receive, send)
