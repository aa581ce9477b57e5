from __future__ import annotations

from pathlib import Path

import pytest

from tests.classifier_service.synthetic import classifier_client
from tests.support import sample


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
async def client(store: Path):
    async with classifier_client(store) as client:
        yield client


@pytest.fixture(scope="session")
def support_intents() -> tuple[list[str], list[str]]:
    """The project's sample dataset: short customer-support texts and their intents."""
    return sample()


@pytest.fixture(scope="session")
def minilm_features(minilm_path: Path, support_intents):
    """The sample texts through the real all-MiniLM-L6-v2, in-process: sentence embeddings and the
    token vectors of each text (padding dropped), from one forward pass."""
    from tests.classifier_service.minilm import encode_intents

    return encode_intents(minilm_path, support_intents[0])
