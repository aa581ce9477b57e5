from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from encoder_service.app import create_app
from encoder_service.runtime import EncoderRuntime
from encoder_service.settings import EncoderSettings


@asynccontextmanager
async def encoder_client(**settings):
    """An in-process encoder app (lifespan run, model loaded) and a client for it."""
    app = create_app(EncoderSettings(**settings))
    async with app.router.lifespan_context(app):
        await app.state.loading
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://encoder") as client:
            client.app = app
            yield client


@pytest.fixture(scope="session")
def minilm_runtime() -> EncoderRuntime:
    runtime = EncoderRuntime(EncoderSettings())
    runtime.load()
    return runtime


@pytest.fixture
async def tiny_client(tiny_bert: Path):
    async with encoder_client(model=str(tiny_bert)) as client:
        yield client


@pytest.fixture
async def classifier_client(tiny_classifier: Path):
    async with encoder_client(model=str(tiny_classifier)) as client:
        yield client
