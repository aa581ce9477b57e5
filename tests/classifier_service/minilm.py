"""The sample texts encoded in-process by the real all-MiniLM-L6-v2, with the contracts an encoder
serving it would declare."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.codecs import Ragged
from services.contracts import EmbeddingSpace, TensorContract


@dataclass(frozen=True)
class MiniLMFeatures:
    embeddings: np.ndarray  # (texts, 384) float32, normalised
    tokens: Ragged  # per text, its token vectors (no padding)
    embedding_contract: TensorContract
    tokens_contract: TensorContract


def encode_intents(model_path: Path, texts: list[str]) -> MiniLMFeatures:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    outputs = model.encode(texts, output_value=None, batch_size=64)
    embeddings = np.stack([o["sentence_embedding"].numpy() for o in outputs]).astype(np.float32)
    rows = [o["token_embeddings"][o["attention_mask"].bool()].numpy() for o in outputs]
    digest = hashlib.sha256((model_path / "model.safetensors").read_bytes()).hexdigest()

    def space(pooling: str, normalized: bool) -> EmbeddingSpace:
        return EmbeddingSpace(
            model_id="sentence-transformers/all-MiniLM-L6-v2", weights_sha256=digest, pooling=pooling,
            normalized=normalized, max_tokens=model.max_seq_length,
        )

    dim = embeddings.shape[1]
    return MiniLMFeatures(
        embeddings=embeddings,
        tokens=Ragged.from_rows(rows, dim=dim),
        embedding_contract=TensorContract(kind="embedding", dim=dim, space=space("mean", True)),
        tokens_contract=TensorContract(kind="tokens", dim=dim, space=space("none", False)),
    )
