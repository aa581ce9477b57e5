"""Tests of the encoder service. ``encode`` and ``forward`` run texts through a loaded runtime the way
the batcher does (tokenize, then one pass submitted to the runtime's streams), blocking."""

from __future__ import annotations

import numpy as np

from encoder_service.runtime import EncoderRuntime
from encoder_service.tokenizing import TokenizedText


def forward(runtime: EncoderRuntime, items: list[TokenizedText], want: list[str], float32: bool = False
            ) -> list[dict[str, np.ndarray]]:
    """Per text, the outputs named in ``want`` (``float32``: computed in float32 on request)."""
    return runtime.submit(items, want, float32).result()


def encode(runtime: EncoderRuntime, texts: list[str], output: str = "embedding", float32: bool = False) -> list[np.ndarray]:
    return [r[output] for r in forward(runtime, runtime.tokenize(texts), [output], float32)]
