from __future__ import annotations

from pathlib import Path

import pytest

from encoder_service.runtime import EncoderRuntime
from encoder_service.settings import EncoderSettings
from tests.support import encoder_client


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
