"""schemathesis against each service's own OpenAPI schema, in process (bounded examples): no 5xx,
and every response matches the schema it documents (errors included: problem+json)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from classifier_service.app import create_app as create_classifier
from classifier_service.settings import ClassifierSettings
from encoder_service.app import create_app as create_encoder
from encoder_service.settings import EncoderSettings
from tests.support import gateway_app, in_process_settings, wait_loaded

CHECKS = [not_a_server_error, response_schema_conformance]
EXAMPLES = 20
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _loaded_encoder(model: Path):
    """An encoder app whose lifespan returns only once the model is loaded (schemathesis starts it)."""
    app = create_encoder(EncoderSettings(model=str(model), threads=1, max_wait_ms=0))
    own = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with own(app_):
            await wait_loaded(app)
            yield

    app.router.lifespan_context = lifespan
    return app


@pytest.fixture(scope="module")
def encoder_schema(tiny_bert):
    return schemathesis.openapi.from_asgi("/openapi.json", _loaded_encoder(tiny_bert))


@pytest.fixture(scope="module")
def classifier_schema(tmp_path_factory):
    app = create_classifier(ClassifierSettings(store=tmp_path_factory.mktemp("fuzz") / "models", torch_threads=1))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def gateway_schema(tiny_bert, tmp_path_factory):
    """The gateway with the real encoder and classifier behind it, all three started by its lifespan."""
    encoder = _loaded_encoder(tiny_bert)
    classifier = create_classifier(ClassifierSettings(store=tmp_path_factory.mktemp("fuzz-gw") / "models", torch_threads=1))
    app = gateway_app(in_process_settings(), encoder=httpx.ASGITransport(app=encoder),
                      classifier=httpx.ASGITransport(app=classifier))
    own = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with encoder.router.lifespan_context(encoder), classifier.router.lifespan_context(classifier):
            async with own(app_):
                yield

    app.router.lifespan_context = lifespan
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def fuzz(schema) -> int:
    """Every operation, with data that fits its schema and data that does not: ``EXAMPLES`` cases each.
    (schemathesis' own pytest decorator needs a pytest older than ours: hypothesis drives it here.)"""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @BOUNDED
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters, no body)
    return len(operations)


def test_encoder_api(encoder_schema):
    assert fuzz(encoder_schema) >= 4


def test_classifier_api(classifier_schema):
    assert fuzz(classifier_schema) >= 7


def test_gateway_api(gateway_schema):
    assert fuzz(gateway_schema) >= 6
