"""One error hierarchy for all three services. Each subclass fixes its HTTP status; one handler
(services.http.web) renders any of them as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://seam.dev/problems/"


class SeamError(Exception):
    """Base class: ``detail`` says what was wrong and how to fix it; ``extra`` adds fields."""

    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            problem["instance"] = instance
        problem.update(self.extra)
        return problem


class InvalidInput(SeamError):
    status, title, slug = 422, "Invalid input", "invalid-input"


class MalformedRequest(SeamError):
    status, title, slug = 400, "Malformed request", "malformed-request"


class UnsupportedMediaType(SeamError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class PayloadTooLarge(SeamError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class RequestTimeout(SeamError):
    status, title, slug = 408, "Request timeout", "request-timeout"


class NotFound(SeamError):
    status, title, slug = 404, "Not found", "not-found"


class ModelNotFound(NotFound):
    title, slug = "Model not found", "model-not-found"


class PipelineNotFound(NotFound):
    title, slug = "Pipeline not found", "pipeline-not-found"


class OutputUnavailable(SeamError):
    """The encoder cannot produce the requested output (e.g. probabilities without a head)."""

    status, title, slug = 422, "Output unavailable", "output-unavailable"


class IncompatibleEstimator(SeamError):
    status, title, slug = 422, "Estimator does not fit the input kind", "incompatible-estimator"


class FeatureMismatch(SeamError):
    """Features sent to a model do not match its recorded input contract."""

    status, title, slug = 422, "Features do not match the model's input contract", "feature-mismatch"


class IncompatiblePipeline(SeamError):
    """The producer's output contract does not fit the consumer's input contract."""

    status, title, slug = 409, "Incompatible pipeline", "incompatible-pipeline"


class Conflict(SeamError):
    status, title, slug = 409, "Conflict", "conflict"


class Unauthorized(SeamError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extra)


class Forbidden(SeamError):
    status, title, slug = 403, "Forbidden", "forbidden"


class Overloaded(SeamError):
    status, title, slug = 429, "Overloaded", "overloaded"

    def __init__(self, detail: str, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extra)


class NotReady(SeamError):
    status, title, slug = 503, "Not ready", "not-ready"


class UpstreamUnavailable(SeamError):
    status, title, slug = 503, "Upstream unavailable", "upstream-unavailable"


class UpstreamTimeout(SeamError):
    status, title, slug = 504, "Upstream timeout", "upstream-timeout"


class BadUpstreamResponse(SeamError):
    status, title, slug = 502, "Bad upstream response", "bad-upstream-response"


class StoreUnreachable(SeamError):
    """The model store (an object store) does not answer, or refuses the service's credentials."""

    status, title, slug = 503, "Store unreachable", "store-unreachable"


class StoreUnavailable(SeamError):
    """The model store cannot be written: full, read-only, or not ours to write. Nothing was changed."""

    status, title, slug = 507, "Insufficient storage", "store-unavailable"


class DamagedVersion(SeamError):
    """A stored version exists but its files are damaged: it is not served, and nothing is served in its place."""

    status, title, slug = 409, "Damaged version", "damaged-version"


class FitTimedOut(SeamError):
    """A fit ran past its time limit and was stopped."""

    status, title, slug = 422, "Fit took too long", "fit-timed-out"
