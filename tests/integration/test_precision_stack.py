"""`make run`'s stack under ENCODER_PRECISION=auto: the demo pipeline is fitted and answers whichever
precision the encoder chose, with the labels float32 gives; bfloat16's vectors stay within cosine
0.9999 of float32's (bfloat16 matmuls over a float32 stream: encoder_service/prepack.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bench.workload import sentences
from encoder_service.precision import choose_precision, cpu_flags
from seam.demo import DEMO_PIPELINE, seed_demo
from seam.stack import Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

TEXTS = sentences(64, seed=7)


def _demo_answers(tmp_path, precision: str) -> tuple[str, list[dict], np.ndarray]:
    env = {"ENCODER_PRECISION": precision, "ENCODER_PORT": str(free_port()), "CLASSIFIER_PORT": str(free_port()),
           "GATEWAY_PORT": str(free_port()), "CLASSIFIER_STORE": str(tmp_path / precision / "models")}
    stack = Stack(var=tmp_path / precision, env=env)
    try:
        stack.start(ready_timeout=300)
        seed_demo(stack.url("gateway"), stack.url("classifier_service"))
        dtype = httpx.get(stack.url("encoder_service") + "/v1/outputs", timeout=30).json()["outputs"]["embedding"]["contract"]["dtype"]
        r = httpx.post(stack.url("gateway") + f"/v1/pipelines/{DEMO_PIPELINE}/predict", json={"texts": TEXTS}, timeout=120)
        assert r.status_code == 200, r.text
        e = httpx.post(stack.url("encoder_service") + "/v1/encode", json={"texts": TEXTS, "output": "embedding"}, timeout=120)
        assert e.status_code == 200, e.text
        return dtype, r.json()["predictions"], np.array(e.json()["data"])
    finally:
        stack.stop()


def test_the_demo_pipeline_answers_under_auto_as_under_float32(tmp_path):
    chosen = choose_precision("auto", "torch", cpu_flags()).precision
    dtype, auto, auto_vectors = _demo_answers(tmp_path, "auto")
    assert dtype == chosen
    if chosen == "float32":
        pytest.skip("auto is float32 on this CPU: nothing to compare")
    _, float32, float32_vectors = _demo_answers(tmp_path, "float32")
    cosine = (auto_vectors * float32_vectors).sum(1) / np.linalg.norm(auto_vectors, axis=1) / np.linalg.norm(float32_vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    # The same labels, but where float32's own decision is a near-tie that bfloat16's rounding may tip.
    for a, b in zip(auto, float32):
        top, second = sorted(b["probabilities"].values(), reverse=True)[:2]
        assert a["label"] == b["label"] or top - second < 0.01, (a, b)
