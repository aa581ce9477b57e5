"""Who may call a service: one ASGI guard, used two ways.

- Service to service: encoder and classifier, when ``*_INTERNAL_TOKEN`` is set, answer only callers
  that send it as ``X-Seam-Internal-Token`` (the gateway does, from ``GATEWAY_INTERNAL_TOKEN``).
- The public API: the gateway, when API keys are configured, answers only ``Authorization: Bearer <key>``.

The gateway's keys are scoped (:class:`ScopedKeyGuardMiddleware`): each has an id, scopes
(``predict``, ``train``, ``admin``), optional pipeline globs and an optional rate.

Missing credentials get 401 (with ``WWW-Authenticate: Bearer``), wrong ones 403. The given value is
compared in constant time against every accepted one, and never logged nor echoed. Probes
(``/healthz``, ``/readyz``, ``/metrics``, ``/v2/health/*``) stay open, so orchestrators need no secret;
what they tell beyond ready or not (models, upstream URLs) is for callers with credentials only:
:func:`shows_details`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from services.errors import Forbidden, Overloaded, SeamError, Unauthorized
from services.settings import ServiceSettings
from services.http.asgi import HTTPMiddleware, RecordingSend
from services.http.web import problem_response
from services.wire import INTERNAL_TOKEN_HEADER

access_log = logging.getLogger("seam.access")

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


class _Guard(HTTPMiddleware):
    """What both guards do first: a request to one of ``open_paths`` passes,
    marked with whether its credentials were accepted (:func:`shows_details`); any other is for
    :meth:`guard` to let through or refuse."""

    def __init__(self, app: ASGIApp, credentials: Credentials, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        super().__init__(app)
        self.credentials = credentials
        self.open_paths = frozenset(open_paths)

    def accepts(self, given: bytes) -> bool:
        return self.credentials.accepts(given)

    async def guard(self, given: bytes | None, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = self.credentials.given(scope)
        if scope["path"] in self.open_paths:
            credentialed = given is not None and self.accepts(given)
            await self.app({**scope, _CREDENTIALED: credentialed}, receive, send)
            return
        await self.guard(given, scope, receive, send)


class TokenGuardMiddleware(_Guard):
    """Refuses HTTP requests without accepted credentials, except to ``open_paths``."""

    async def guard(self, given: bytes | None, scope: Scope, receive: Receive, send: Send) -> None:
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


# --- scoped API keys -------------------------------------------------------------------------------------

SCOPES = ("predict", "train", "admin")


@dataclass(frozen=True)
class ScopedKey:
    """One API key: an id (named in logs and metrics; the key itself never is), the SHA-256 of the key,
    its scopes, the pipelines it may touch (globs; None: all) and an optional rate (per second) and burst."""

    id: str
    digest: bytes = field(repr=False)
    scopes: frozenset[str] = frozenset(SCOPES)
    pipelines: tuple[str, ...] | None = None
    rate: float | None = None
    burst: int | None = None

    def covers(self, pipeline: str) -> bool:
        return self.pipelines is None or any(fnmatch.fnmatchcase(pipeline, glob) for glob in self.pipelines)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> float:
        """0 when a token was taken; else the seconds until one is there."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyRing:
    """The keys a guard accepts, with a token bucket for each rate-limited one."""

    def __init__(self, keys: Iterable[ScopedKey], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        ids = [key.id for key in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two keys share one id: {sorted({i for i in ids if ids.count(i) > 1})}")
        self.buckets = {key.id: TokenBucket(key.rate, key.burst or max(1, math.ceil(key.rate)), clock)
                        for key in self.keys if key.rate}

    def identify(self, given: bytes) -> ScopedKey | None:
        # Every digest is compared, so the time taken does not tell which one came close.
        digest = hashlib.sha256(given).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def wait(self, key: ScopedKey) -> float:
        bucket = self.buckets.get(key.id)
        return bucket.take() if bucket else 0.0


@dataclass(frozen=True)
class Need:
    """What a request needs: a scope (None: any key) and the pipeline it touches (None: none in particular)."""

    scope: str | None
    pipeline: str | None = None


class KeyAccess:
    """A key ring that can be swapped while serving (key rotation), the route-to-need table and the
    per-key counters. The guard below reads it on every request."""

    def __init__(self, ring: KeyRing, needs: Callable[[str, str], Need], source: str = "the API keys") -> None:
        self.ring = ring
        self.needs = needs
        self.source = source  # named in refusals: where to add a scope or a pipeline
        self.counts = None

    def count(self, key_id: str, outcome: str) -> None:
        if self.counts is not None:
            self.counts.labels(key=key_id, outcome=outcome).inc()


class ScopedKeyGuardMiddleware(_Guard):
    """401 without a key, 403 with a wrong one, 403 naming the scope or pipeline a key lacks, 429 with
    ``Retry-After`` when a key is over its rate. Admin actions are logged with the key's id."""

    def __init__(self, app: ASGIApp, access: KeyAccess, open_paths: Iterable[str] = OPEN_PATHS,
                 missing_hint: str = "Send 'Authorization: Bearer <API key>'.",
                 wrong_hint: str = "The API key is not valid.") -> None:
        super().__init__(app, Credentials(secrets=(b"-",), missing_hint=missing_hint, wrong_hint=wrong_hint), open_paths)
        self.access = access

    def accepts(self, given: bytes) -> bool:
        return self.access.ring.identify(given) is not None

    def _refusal(self, key: ScopedKey, need: Need, method: str, path: str) -> tuple[SeamError, str] | None:
        where = self.access.source
        if need.scope is not None and need.scope not in key.scopes:
            return Forbidden(
                f"The API key {key.id!r} lacks the {need.scope!r} scope that {method} {path} needs "
                f"(it has: {', '.join(sorted(key.scopes))}); add {need.scope!r} to its scopes in {where}, "
                "or use a key that has it.", key=key.id, scope=need.scope), "scope"
        if need.pipeline is not None and not key.covers(need.pipeline):
            return Forbidden(
                f"The API key {key.id!r} may not use the pipeline {need.pipeline!r} (its pipelines: "
                f"{', '.join(key.pipelines or ())}); add a matching glob to its pipelines in {where}.",
                key=key.id, pipeline=need.pipeline), "pipeline"
        wait = self.access.ring.wait(key)
        if wait > 0:
            return Overloaded(
                f"The API key {key.id!r} is over its rate ({key.rate:g} requests/s, burst {key.burst}); "
                f"retry after {wait:.2f}s, or raise its rate in {where}.",
                retry_after=max(1, math.ceil(wait)), key=key.id), "rate"
        return None

    async def guard(self, given: bytes | None, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        key = self.access.ring.identify(given) if given is not None else None
        if given is None:
            error: SeamError = Unauthorized(self.credentials.missing_hint)
        elif key is None:
            self.access.count("<invalid>", "invalid")
            error = Forbidden(self.credentials.wrong_hint)
        else:
            need = self.access.needs(method, path)
            refused = self._refusal(key, need, method, path)
            if refused is None:
                self.access.count(key.id, "allowed")
                if need.scope == "admin":
                    await self._admin(key, scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                return
            error, outcome = refused
            self.access.count(key.id, outcome)
            access_log.info("refused %s %s for API key %r: %s", method, path, key.id, outcome)
        await problem_response(error.to_problem(path), error.headers)(scope, receive, send)

    async def _admin(self, key: ScopedKey, scope: Scope, receive: Receive, send: Send) -> None:
        sent = RecordingSend(send)
        try:
            await self.app(scope, receive, sent)
        finally:
            access_log.info("admin action %s %s by API key %r -> %d", scope["method"], scope["path"], key.id, sent.status)
