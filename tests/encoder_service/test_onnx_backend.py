"""ENCODER_BACKEND=onnxruntime: exported once from the same weights, cached, and equal to torch."""

from __future__ import annotations

import numpy as np
import pytest

from encoder_service.runtime import EncoderRuntime, ModelLoadError
from encoder_service.settings import EncoderSettings
from tests.encoder_service import encode

TEXTS = ["Where is my parcel? It should have arrived yesterday.", "hi", "refund " * 300]


def _max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_onnx_equals_torch_and_is_cached(tiny_classifier, tmp_path):
    torch_rt = EncoderRuntime(EncoderSettings(model=str(tiny_classifier)))
    torch_rt.load()
    onnx_rt = EncoderRuntime(EncoderSettings(model=str(tiny_classifier), backend="onnxruntime", cache_dir=tmp_path))
    onnx_rt.load()
    for output in ("embedding", "tokens", "probabilities"):
        assert _max_diff(encode(torch_rt, TEXTS, output), encode(onnx_rt, TEXTS, output)) < 1e-4, output
    [exported] = list(tmp_path.glob("*.onnx"))
    stamp = exported.stat().st_mtime_ns
    again = EncoderRuntime(EncoderSettings(model=str(tiny_classifier), backend="onnxruntime", cache_dir=tmp_path))
    again.load()
    assert exported.stat().st_mtime_ns == stamp  # reused, not exported again
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.real_model
def test_onnx_minilm_parity(minilm_runtime, tmp_path):
    onnx_rt = EncoderRuntime(EncoderSettings(backend="onnxruntime", cache_dir=tmp_path))
    onnx_rt.load()
    for output in ("embedding", "tokens"):
        assert _max_diff(encode(minilm_runtime, TEXTS, output), encode(onnx_rt, TEXTS, output)) < 1e-4


def test_bfloat16_with_onnxruntime_is_refused_clearly(tiny_bert, tmp_path):
    runtime = EncoderRuntime(EncoderSettings(model=str(tiny_bert), backend="onnxruntime", precision="bfloat16", cache_dir=tmp_path))
    with pytest.raises(ModelLoadError, match="ENCODER_PRECISION=float32"):
        runtime.load()
