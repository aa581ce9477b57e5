from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeClassifier, FakeEncoder

ENCODER_URL = "http://encoder.test:8001"
CLASSIFIER_URL = "http://classifier.test:8002"


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
async def gateway_app(settings, fake_encoder, fake_classifier):
    app = create_app(settings, encoder_transport=fake_encoder.transport(), classifier_transport=fake_classifier.transport())
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def runtime(gateway_app):
    return gateway_app.state.runtime


@pytest.fixture
async def client(gateway_app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gateway") as client:
        yield client
