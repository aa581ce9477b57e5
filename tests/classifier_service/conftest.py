from __future__ import annotations

from pathlib import Path

import pytest

from tests.classifier_service.synthetic import classifier_client


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
async def client(store: Path):
    async with classifier_client(store) as client:
        yield client
