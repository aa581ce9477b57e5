"""Small synthetic features and contracts for the classifier tests, and a client over an in-process app."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import numpy as np

from classifier_service.app import create_app
from classifier_service.settings import ClassifierSettings
from services.codecs import BINARY_CONTENT_TYPE, Ragged, encode_binary
from services.contracts import EmbeddingSpace, TensorContract
from tests.support import serve

CLASSES = ("billing", "refund", "shipping")
DIM = 8
MAX_TOKENS = 12

SPACE = EmbeddingSpace(
    model_id="test-encoder", weights_sha256="0" * 64, pooling="mean", normalized=False, max_tokens=MAX_TOKENS
)


def embedding_contract(dim: int = DIM) -> TensorContract:
    return TensorContract(kind="embedding", dim=dim, space=SPACE)


def tokens_contract(dim: int = DIM) -> TensorContract:
    return TensorContract(kind="tokens", dim=dim, space=SPACE)


def probabilities_contract(labels: tuple[str, ...] = ("negative", "neutral", "positive")) -> TensorContract:
    return TensorContract(kind="probabilities", dim=len(labels), labels=list(labels))


def _labels(per_class: int) -> list[str]:
    return [c for _ in range(per_class) for c in CLASSES]


def _centres(dim: int, seed: int = 42) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(len(CLASSES), dim))


def vectors(per_class: int = 10, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three Gaussian blobs, float32 (rows, dim)."""
    labels = _labels(per_class)
    rng = np.random.default_rng(seed)
    centre = _centres(dim)[[CLASSES.index(y) for y in labels]]
    return (centre + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def sequences(per_class: int = 10, dim: int = DIM, seed: int = 0) -> tuple[Ragged, list[str]]:
    """Sequences of 2..8 noise tokens, one or two of which carry the class: a job for attention."""
    labels = _labels(per_class)
    rng = np.random.default_rng(seed)
    centres = _centres(dim)
    rows = []
    for y in labels:
        row = rng.normal(size=(int(rng.integers(2, 9)), dim))
        signal = rng.choice(len(row), size=min(2, len(row)), replace=False)
        row[signal] += centres[CLASSES.index(y)]
        rows.append(row.astype(np.float32))
    return Ragged.from_rows(rows, dim=dim), labels


def distributions(per_class: int = 10, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three-column distributions from an imagined upstream classifier, rows summing to 1."""
    labels = _labels(per_class)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 3)) + 2.5 * np.eye(3)[[CLASSES.index(y) for y in labels]]
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32), labels


def features_for(kind: str, per_class: int = 10, seed: int = 0) -> tuple[Any, list[str], TensorContract]:
    if kind == "embedding":
        return (*vectors(per_class, seed=seed), embedding_contract())
    if kind == "tokens":
        return (*sequences(per_class, seed=seed), tokens_contract())
    return (*distributions(per_class, seed=seed), probabilities_contract())


def tensor_json(tensor: Any) -> list:
    """A tensor as a caller writes it in JSON: (rows, dim) lists; one (length, dim) list per ragged row."""
    return [row.tolist() for row in tensor.rows()] if isinstance(tensor, Ragged) else np.asarray(tensor).tolist()


def fit_body(features: Any, labels: list[str], contract: TensorContract, **fields: Any) -> dict[str, Any]:
    return {"features": tensor_json(features), "labels": labels, "contract": contract.model_dump(), **fields}


def binary(tensor: Any, **meta: Any) -> dict[str, Any]:
    """httpx keyword arguments posting ``tensor`` as a binary frame with ``meta``."""
    return {"content": encode_binary(tensor, meta), "headers": {"content-type": BINARY_CONTENT_TYPE}}


@asynccontextmanager
async def classifier_client(
    store: Path, *, raise_app_exceptions: bool = True, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process classifier app over ``store`` (lifespan run, store loaded) and a client for it.
    ``raise_app_exceptions=False`` lets a test see the 500 problem an unexpected error becomes."""
    app = create_app(ClassifierSettings(store=store, **settings))
    async with serve(app, "http://classifier", raise_app_exceptions=raise_app_exceptions) as client:
        yield client


async def fit(client: httpx.AsyncClient, name: str, kind: str = "embedding", **fields: Any) -> httpx.Response:
    features, labels, contract = features_for(kind)
    return await client.post(f"/v1/models/{name}/fit", json=fit_body(features, labels, contract, **fields))
