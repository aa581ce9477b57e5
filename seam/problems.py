"""The exceptions of :mod:`seam.client`: one class per problem type seam answers (RFC 9457
problem+json), picked by :func:`error_of`. Import them from ``seam.client``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from services import compatibility

REQUEST_ID_HEADER = "X-Request-ID"
PROBLEM_BASE = "https://seam.dev/problems/"

class SeamError(Exception):
    """An error answer from seam. ``problem`` is the whole problem+json body."""

    def __init__(self, status: int, problem: Mapping[str, Any], *, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.problem = dict(problem)
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        self.type = str(problem.get("type") or "about:blank")
        self.request_id = request_id or problem.get("request_id")
        self.retry_after = retry_after
        super().__init__(f"{status} {self.title}: {self.detail}".strip())


class Unreachable(SeamError):
    """No answer came back: the gateway is down, refused the connection or did not answer in time."""

    def __init__(self, url: str, cause: Exception) -> None:
        detail = f"cannot reach {url}: {type(cause).__name__}: {cause}"
        super().__init__(0, {"title": "Unreachable", "detail": detail})


class BadRequest(SeamError):
    """400: the body is not valid JSON (or not UTF-8)."""


class Unauthorized(SeamError):
    """401: no API key, or a wrong one (``api_key=``)."""


class Forbidden(SeamError):
    """403."""


class NotFound(SeamError):
    """404: no such pipeline, model or route."""


class PipelineNotFound(NotFound):
    """404: no pipeline of that name."""


class Conflict(SeamError):
    """409."""


class Mismatch(compatibility.Mismatch):
    """One field where the producer's output contract does not fit the consumer's input contract: the
    services' own model (one definition of the wire shape), also built positionally."""

    def __init__(self, field: str, expected: Any, actual: Any, message: str, producer: str | None = None,
                 consumer: str | None = None) -> None:
        super().__init__(field=field, expected=expected, actual=actual, message=message, producer=producer,
                         consumer=consumer)

    @classmethod
    def from_dict(cls, m: Mapping[str, Any]) -> Mismatch:
        return cls(str(m.get("field")), m.get("expected"), m.get("actual"), str(m.get("message", "")),
                   m.get("producer"), m.get("consumer"))


class IncompatiblePipeline(Conflict):
    """409: the pipeline's chain does not fit; ``mismatches`` names every field, both sides."""

    @property
    def mismatches(self) -> list[Mismatch]:
        return [Mismatch.from_dict(m) for m in self.problem.get("mismatches") or () if isinstance(m, Mapping)]


class PayloadTooLarge(SeamError):
    """413: too many or too long texts in one request."""


class UnsupportedMediaType(SeamError):
    """415."""


class InvalidInput(SeamError):
    """422: the request is well-formed JSON but its values are not acceptable (``errors``, ``index``)."""


class Overloaded(SeamError):
    """429: still over capacity after the retries."""


class ServerError(SeamError):
    """5xx."""


class BadUpstreamResponse(ServerError):
    """502: an upstream (encoder, classifier) answered something the gateway could not use."""


class Unavailable(ServerError):
    """503: the gateway or an upstream is not ready (after the retries)."""


class UpstreamTimeout(ServerError):
    """504: an upstream did not answer in time."""


_BY_SLUG: dict[str, type[SeamError]] = {
    "malformed-request": BadRequest, "unauthorized": Unauthorized, "forbidden": Forbidden,
    "pipeline-not-found": PipelineNotFound, "model-not-found": NotFound, "not-found": NotFound,
    "incompatible-pipeline": IncompatiblePipeline, "conflict": Conflict, "payload-too-large": PayloadTooLarge,
    "unsupported-media-type": UnsupportedMediaType, "invalid-input": InvalidInput, "overloaded": Overloaded,
    "bad-upstream-response": BadUpstreamResponse, "upstream-unavailable": Unavailable, "not-ready": Unavailable,
    "upstream-timeout": UpstreamTimeout,
}
_BY_STATUS: dict[int, type[SeamError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 422: InvalidInput, 429: Overloaded, 502: BadUpstreamResponse, 503: Unavailable,
    504: UpstreamTimeout,
}


def error_of(response: httpx.Response) -> SeamError:
    """The typed exception an error answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {"title": response.reason_phrase, "detail": response.text[:500]}
    slug = str(problem.get("type") or "").removeprefix(PROBLEM_BASE)
    cls = _BY_SLUG.get(slug) or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else SeamError
    return cls(response.status_code, problem, request_id=response.headers.get(REQUEST_ID_HEADER),
               retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # absent, or an HTTP date (seam sends seconds)
