"""HTTP glue every service installs the same way: problem+json for every error, a request body
cap, and health routes. A few functions, not an app: each service builds its own in ``create_app``."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.errors import PROBLEM_BASE, PROBLEM_CONTENT_TYPE, PayloadTooLarge, SeamError
from services.requestid import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger("seam")

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
    return problem_response(problem)


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
    """Refuses request bodies over ``max_bytes`` with 413 before reading them all into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = PayloadTooLarge(
            f"The request body exceeds {self.max_bytes} bytes; send fewer or shorter texts per request.",
            limit_bytes=self.max_bytes,
        )
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await problem_response(error.to_problem(scope.get("path")))(scope, receive, send)
            return
        seen = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise error
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Whatever the app makes of the aborted read (FastAPI turns any error while parsing a
            # body into its own 400) is dropped: the 413 below answers instead.
            if exceeded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await problem_response(error.to_problem(scope.get("path")))(scope, receive, send)
