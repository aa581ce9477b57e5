"""Fixtures of the gateway tests: a gateway over fakes (``client``, ``gateway_with`` for other settings),
and ``gateway``, one over the real encoder and classifier apps in process (``world``)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from gateway.settings import GatewaySettings
from tests.gateway.fakes import CLASSIFIER_URL, ENCODER_URL, FakeClassifier, FakeEncoder
from tests.support import Services, gateway_app, in_process_settings, serve


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(
        encoder_url=ENCODER_URL, classifier_url=CLASSIFIER_URL, timeout_s=1.0, pipeline_ttl_s=3600, train_chunk_size=4,
        recheck_interval_s=0.0,
    )


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture
async def client(settings, fake_encoder, fake_classifier):
    async with serve(gateway_app(settings, encoder=fake_encoder, classifier=fake_classifier), "http://gateway") as client:
        yield client


@pytest.fixture
def runtime(client):
    return client.app.state.runtime


@pytest.fixture
def gateway_with(settings, fake_encoder, fake_classifier):
    """``async with gateway_with(timeout_s=0.2) as client``: another gateway over this test's fakes, the
    ``settings`` fixture with some fields changed."""

    def build(**changes):
        changed = GatewaySettings(**{**settings.model_dump(), **changes})
        return serve(gateway_app(changed, encoder=fake_encoder, classifier=fake_classifier), "http://gw")

    return build


@pytest.fixture
async def world(tmp_path, tiny_bert):
    """The real encoder (``tiny_bert``; ``world.serve_encoder`` restarts it with another model) and classifier."""
    async with AsyncExitStack() as stack:
        services = Services(stack, tmp_path / "models")
        await services.start_classifier()
        await services.serve_encoder(tiny_bert)
        yield services


@pytest.fixture
async def gateway(world):
    app = gateway_app(in_process_settings(train_chunk_size=16), encoder=world.encoder, classifier=world.classifier)
    async with serve(app, "http://gateway") as client:
        yield client
