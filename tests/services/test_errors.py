"""The error hierarchy: each subclass fixes its status; to_problem renders RFC 9457 fields."""

from __future__ import annotations

import inspect

import pytest

import services.errors as errors
from services.errors import (
    PROBLEM_BASE,
    PROBLEM_CONTENT_TYPE,
    BadUpstreamResponse,
    Conflict,
    DamagedVersion,
    FeatureMismatch,
    FitTimedOut,
    Forbidden,
    IncompatibleEstimator,
    IncompatiblePipeline,
    InvalidInput,
    MalformedRequest,
    ModelNotFound,
    NotFound,
    NotReady,
    OutputUnavailable,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    PipelineNotFound,
    SeamError,
    StoreUnavailable,
    StoreUnreachable,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
)

STATUSES = {
    SeamError: 500,
    InvalidInput: 422,
    MalformedRequest: 400,
    UnsupportedMediaType: 415,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    NotFound: 404,
    ModelNotFound: 404,
    PipelineNotFound: 404,
    OutputUnavailable: 422,
    IncompatibleEstimator: 422,
    FeatureMismatch: 422,
    IncompatiblePipeline: 409,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    Overloaded: 429,
    NotReady: 503,
    UpstreamUnavailable: 503,
    UpstreamTimeout: 504,
    BadUpstreamResponse: 502,
    StoreUnavailable: 507,
    StoreUnreachable: 503,
    DamagedVersion: 409,
    FitTimedOut: 422,
}

ALL_ERRORS = [
    obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, SeamError)
]


def test_every_error_class_is_listed_here() -> None:
    # A new error type must get its status pinned in STATUSES.
    assert set(ALL_ERRORS) == set(STATUSES)


@pytest.mark.parametrize(("cls", "status"), list(STATUSES.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_error_fixes_its_status(cls: type[SeamError], status: int) -> None:
    assert cls.status == status
    exc = cls("what went wrong")
    assert exc.status == status
    assert exc.to_problem()["status"] == status
    assert isinstance(exc, SeamError) and isinstance(exc, Exception)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_each_error_has_a_title_and_a_problem_type(cls: type[SeamError]) -> None:
    problem = cls("detail").to_problem()
    assert problem["title"] == cls.title and cls.title
    assert problem["type"] == PROBLEM_BASE + cls.slug
    assert problem["type"].startswith("https://")
    assert " " not in cls.slug and cls.slug == cls.slug.lower()


def test_slugs_are_unique() -> None:
    slugs = [cls.slug for cls in ALL_ERRORS]
    assert len(slugs) == len(set(slugs))


def test_specific_not_found_errors_are_not_found() -> None:
    assert issubclass(ModelNotFound, NotFound) and issubclass(PipelineNotFound, NotFound)
    assert ModelNotFound.title != NotFound.title


def test_problem_fields() -> None:
    exc = InvalidInput("texts must not be empty")
    assert str(exc) == "texts must not be empty"
    assert exc.detail == "texts must not be empty"
    assert exc.to_problem() == {
        "type": "https://seam.dev/problems/invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "texts must not be empty",
    }


def test_problem_instance_is_added_when_given() -> None:
    problem = ModelNotFound("no model 'intent'").to_problem("/v1/models/intent")
    assert problem["instance"] == "/v1/models/intent"
    assert "instance" not in ModelNotFound("x").to_problem()


def test_extra_fields_join_the_problem() -> None:
    mismatches = [{"field": "dim", "expected": 768, "actual": 384}]
    exc = IncompatiblePipeline("384 does not fit 768", mismatches=mismatches, pipeline="intent")
    assert exc.extra == {"mismatches": mismatches, "pipeline": "intent"}
    problem = exc.to_problem("/v1/pipelines/intent/predict")
    assert problem["mismatches"] == mismatches
    assert problem["pipeline"] == "intent"
    assert {"type", "title", "status", "detail", "instance"} <= set(problem)


def test_plain_errors_carry_no_headers() -> None:
    assert InvalidInput("x").headers == {}
    assert PayloadTooLarge("x", limit_bytes=10).headers == {}


def test_headers_can_be_given() -> None:
    exc = NotReady("warming up", headers={"Retry-After": "5"})
    assert exc.headers == {"Retry-After": "5"}
    assert "headers" not in exc.to_problem()


def test_overloaded_sets_retry_after() -> None:
    assert Overloaded("queue full").headers == {"Retry-After": "1"}
    exc = Overloaded("queue full", retry_after=3, queue_depth=512)
    assert exc.headers == {"Retry-After": "3"}
    assert exc.status == 429
    assert exc.to_problem()["queue_depth"] == 512


def test_unauthorized_sets_www_authenticate() -> None:
    exc = Unauthorized("missing internal token", header="X-Seam-Internal-Token")
    assert exc.headers == {"WWW-Authenticate": "Bearer"}
    assert exc.status == 401
    assert exc.to_problem()["header"] == "X-Seam-Internal-Token"


def test_errors_can_be_raised_and_caught_by_base_class() -> None:
    with pytest.raises(SeamError) as info:
        raise UpstreamTimeout("encoder did not answer within 30 s", upstream="encoder")
    assert info.value.status == 504
    assert info.value.to_problem()["upstream"] == "encoder"


def test_problem_content_type() -> None:
    assert PROBLEM_CONTENT_TYPE == "application/problem+json"
