"""Request ids and the access log, installed outermost on every service by :func:`install_request_context`.

``X-Request-ID`` is taken from the caller when it is a sane token (1 to 128 characters of letters, digits
and ``._:/+=@-``), made otherwise (32 hex digits), and then: returned on every response, sent on every
upstream call (gateway.upstreams), written in every log line (services.http.logs) and in every problem+json
body as ``request_id`` (services.http.web), so a user's bug report names the request.

One access log line per request (logger ``seam.requests``, after the response): method, path, route
template, status and duration, in the text or JSON format the service logs in (``*_LOG_FORMAT``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextvars import ContextVar

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.http.asgi import HTTPMiddleware, RecordingSend

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 128
_VALID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,%d}" % MAX_REQUEST_ID_CHARS)
_HEADER = REQUEST_ID_HEADER.lower().encode()

# The request being answered, in this task (each request runs in a task of its own).
request_id: ContextVar[str | None] = ContextVar("seam_request_id", default=None)
access_log = logging.getLogger("seam.requests")


def current_request_id() -> str | None:
    return request_id.get()


def new_request_id() -> str:
    return os.urandom(16).hex()


def accepted(given: bytes | None) -> str | None:
    """The caller's id when it is one we may echo and log, else None (a new one is made)."""
    if given is None or _VALID.fullmatch(given) is None:
        return None
    return given.decode("ascii")


class RequestContextMiddleware(HTTPMiddleware):
    """Gives each request its id (kept in :data:`request_id`), returns it, and logs the request once answered."""

    def __init__(self, app: ASGIApp, *, quiet_paths: frozenset[str] = frozenset()) -> None:
        super().__init__(app)
        self.quiet_paths = quiet_paths

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        rid = accepted(given) or new_request_id()
        # Never reset: the 500 handler (Starlette's, outside every middleware) still reads it.
        request_id.set(rid)
        header = (_HEADER, rid.encode())
        start = time.perf_counter()

        def identified(message: Message) -> Message:
            headers = list(message.get("headers", ()))
            if any(k == _HEADER for k, _ in headers):  # problem_response may have set it already
                return message
            return {**message, "headers": [*headers, header]}

        sent = RecordingSend(send, identified)
        try:
            await self.app(scope, receive, sent)
        finally:
            status = sent.status
            if access_log.isEnabledFor(logging.INFO) and scope["path"] not in self.quiet_paths:
                route = scope.get("route")
                duration_ms = round((time.perf_counter() - start) * 1000, 3)
                access_log.info(
                    '%s %s %d %.1fms', scope["method"], scope["path"], status, duration_ms,
                    extra={"method": scope["method"], "path": scope["path"], "route": getattr(route, "path", None),
                           "status": status, "duration_ms": duration_ms, "client": (scope.get("client") or ("",))[0]},
                )


def install_request_context(app: FastAPI, *, quiet_paths: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"})) -> None:
    """Installed last by ``build_app``: the middleware must wrap all the others. Probes are answered
    with an id like every request, but not logged (``quiet_paths``), as uvicorn's access log did not."""
    app.add_middleware(RequestContextMiddleware, quiet_paths=quiet_paths)
