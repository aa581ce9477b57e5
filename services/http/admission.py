"""What decides whether a request gets in, before any route runs. Each service installs the same
chain with :func:`install_admission`, checked in this order:

1. credentials (:mod:`services.http.auth`): 401 / 403, and for scoped keys 403 naming the scope or pipeline
   a key lacks, 429 with ``Retry-After`` over its rate;
2. the body's media type: 415 for anything but JSON or the binary tensor frame;
3. the body, read in full (:class:`services.http.web.BodyLimitMiddleware`): its size (``*_MAX_BODY_BYTES``,
   413 before it is all in memory), the time it takes to arrive (``*_BODY_TIMEOUT_S``, 408) and how deep
   its JSON nests (``*_MAX_JSON_DEPTH``, 400, before anything parses it);
4. requests in flight (``*_MAX_IN_FLIGHT``): 429 with ``Retry-After`` instead of queueing without bound.
   A request counts only once its body is in: clients trickling their bodies cannot take every slot.

Probes (``/healthz``, ``/readyz``, ``/metrics``) are never counted nor refused for load.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.http.auth import OPEN_PATHS, Credentials, KeyAccess, ScopedKeyGuardMiddleware, TokenGuardMiddleware
from services.codecs import BINARY_CONTENT_TYPE
from services.errors import Overloaded, UnsupportedMediaType
from services.inputs import has_content
from services.settings import ServiceSettings
from services.http.web import BodyLimitMiddleware, problem_response

# JSON, the binary tensor frame, and octet-stream (binary protocols; the route says if it takes it).
ACCEPTED_MEDIA_TYPES = ("application/json", BINARY_CONTENT_TYPE, "application/octet-stream")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ConcurrencyLimitMiddleware:
    """At most ``max_in_flight`` requests are handled at once; one more is answered 429 at once.
    (One counter per app: an app serves from one event loop, so no lock is needed.)"""

    def __init__(self, app: ASGIApp, max_in_flight: int, setting: str = "MAX_IN_FLIGHT", retry_after: int = 1,
                 exempt: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.setting = setting
        self.retry_after = retry_after
        self.exempt = frozenset(exempt)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            error = Overloaded(
                f"{self.in_flight} requests are in progress, the most this service takes at once "
                f"({self.setting}={self.max_in_flight}); retry shortly",
                retry_after=self.retry_after, limit=self.max_in_flight,
            )
            await problem_response(error.to_problem(scope.get("path")), error.headers)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class MediaTypeMiddleware:
    """Refuses a request body of a media type the services do not read (form data, text, CSV...)
    with 415, instead of a confusing validation error. A body without ``Content-Type`` is read as JSON."""

    def __init__(self, app: ASGIApp, accepted: Iterable[str] = ACCEPTED_MEDIA_TYPES) -> None:
        self.app = app
        self.accepted = tuple(accepted)

    def _refused(self, content_type: bytes) -> str | None:
        media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
        if media_type in self.accepted or (media_type.startswith("application/") and media_type.endswith("+json")):
            return None
        return media_type or "an empty media type"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            content_type = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), None)
            refused = self._refused(content_type) if content_type is not None else None
            if refused is not None:
                error = UnsupportedMediaType(
                    f"The body is {refused}; send application/json (or {BINARY_CONTENT_TYPE} where a route takes "
                    "tensor frames).",
                    accepted=list(self.accepted[:2]),
                )
                await problem_response(error.to_problem(scope.get("path")))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_admission(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    credentials: Credentials | None = None,
    access: KeyAccess | None = None,
    open_paths: Iterable[str] = OPEN_PATHS,
) -> None:
    """Installs the chain described above. ``credentials``: who may call (None: anyone); or ``access``:
    scoped keys (the gateway's), checked for scope, pipeline and rate."""
    prefix = settings.model_config.get("env_prefix", "")
    has_content("")  # builds the content check's character class once per process (~0.2 s), not on a request
    # add_middleware puts each new one outside the previous: add them innermost first.
    app.add_middleware(ConcurrencyLimitMiddleware, max_in_flight=settings.max_in_flight,
                       setting=f"{prefix}MAX_IN_FLIGHT")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s,
                       max_depth=settings.max_json_depth, prefix=prefix)
    app.add_middleware(MediaTypeMiddleware)
    if credentials is not None:
        app.add_middleware(TokenGuardMiddleware, credentials=credentials, open_paths=open_paths)
    if access is not None:
        app.add_middleware(
            ScopedKeyGuardMiddleware, access=access, open_paths=open_paths,
            missing_hint="This gateway needs an API key: send 'Authorization: Bearer <API key>'.",
            wrong_hint="The API key sent is not valid for this gateway.",
        )
