"""Who may call a service: one ASGI guard, used two ways.

- Service to service: encoder and classifier, when ``*_INTERNAL_TOKEN`` is set, answer only callers
  that send it as ``X-Seam-Internal-Token`` (the gateway does, from ``GATEWAY_INTERNAL_TOKEN``).
- The public API: the gateway, when API keys are configured, answers only ``Authorization: Bearer <key>``.

Missing credentials get 401 (with ``WWW-Authenticate: Bearer``), wrong ones 403. The given value is
compared in constant time against every accepted one, and never logged nor echoed. Probes
(``/healthz``, ``/readyz``, ``/metrics``, ``/v2/health/*``) stay open, so orchestrators need no secret;
what they tell beyond ready or not (models, upstream URLs) is for callers with credentials only:
:func:`shows_details`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from services.errors import Forbidden, SeamError, Unauthorized
from services.settings import ServiceSettings
from services.web import problem_response

INTERNAL_TOKEN_HEADER = "X-Seam-Internal-Token"
# Probes: liveness, readiness (also the Open Inference Protocol's), and metrics scrapes.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
# Set by the guard on the scope of an open path: whether the caller sent accepted credentials.
_CREDENTIALED = "seam.credentialed"


@dataclass(frozen=True)
class Credentials:
    """What a guard accepts: where the secret travels, the accepted values, and what to tell a caller."""

    secrets: tuple[bytes, ...] = field(repr=False)  # never in a repr, a log or a traceback
    header: str = "authorization"  # lower-case, as ASGI gives header names
    bearer: bool = True  # the value is "Bearer <secret>"
    missing_hint: str = "Send 'Authorization: Bearer <API key>'."
    wrong_hint: str = "The API key is not valid."

    def __post_init__(self) -> None:
        if not self.secrets or any(not s for s in self.secrets):
            raise ValueError("a guard needs at least one non-empty secret")

    def given(self, scope: Scope) -> bytes | None:
        raw = next((v for k, v in scope.get("headers", ()) if k == self.header.encode()), None)
        if raw is None:
            return None
        if self.bearer:
            scheme, _, value = raw.strip().partition(b" ")
            if scheme.lower() != b"bearer" or not value.strip():
                return None
            raw = value
        return raw.strip() or None

    def accepts(self, given: bytes) -> bool:
        # Every accepted value is compared, so the time taken does not tell which one came close.
        matched = False
        for secret in self.secrets:
            matched |= hmac.compare_digest(given, secret)
        return matched


def internal_credentials(settings: ServiceSettings) -> Credentials | None:
    """The internal token a service requires, or None when it is not configured."""
    if settings.internal_token is None:
        return None
    return Credentials(
        secrets=(settings.internal_token.get_secret_value().encode(),),
        header=INTERNAL_TOKEN_HEADER.lower(),
        bearer=False,
        missing_hint=f"This service answers the gateway only: send the service token as '{INTERNAL_TOKEN_HEADER}'.",
        wrong_hint=f"The service token sent as '{INTERNAL_TOKEN_HEADER}' is not this service's "
        "(GATEWAY_INTERNAL_TOKEN must equal the upstream's *_INTERNAL_TOKEN).",
    )


class TokenGuardMiddleware:
    """Refuses HTTP requests without accepted credentials, except to ``open_paths``."""

    def __init__(self, app: ASGIApp, credentials: Credentials, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.credentials = credentials
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = self.credentials.given(scope)
        if scope["path"] in self.open_paths:
            credentialed = given is not None and self.credentials.accepts(given)
            await self.app({**scope, _CREDENTIALED: credentialed}, receive, send)
            return
        error: SeamError | None = None
        if given is None:
            error = Unauthorized(self.credentials.missing_hint)
        elif not self.credentials.accepts(given):
            error = Forbidden(self.credentials.wrong_hint)
        if error is None:
            await self.app(scope, receive, send)
            return
        await problem_response(error.to_problem(scope.get("path")), error.headers)(scope, receive, send)


def shows_details(scope: Scope) -> bool:
    """Whether a probe may tell this caller more than ready or not (model names, upstream URLs): it sent
    accepted credentials, or the service requires none (it is open anyway)."""
    return bool(scope.get(_CREDENTIALED, True))
