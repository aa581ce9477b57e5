"""`make run`'s stack under ENCODER_PRECISION=auto: the demo pipeline is fitted (on float32 vectors)
and answers whichever precision the encoder chose, with the labels float32 gives, near-ties included
(decided again in float32: GATEWAY_NEAR_TIE_MARGIN); bfloat16's vectors stay within cosine 0.9999 of
float32's (bfloat16 matmuls over a float32 stream: encoder_service/prepack.py)."""

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


def _demo_answers(tmp_path, precision: str) -> tuple[str, str, list[dict], np.ndarray]:
    env = {"ENCODER_PRECISION": precision, "ENCODER_PORT": str(free_port()), "CLASSIFIER_PORT": str(free_port()),
           "GATEWAY_PORT": str(free_port()), "CLASSIFIER_STORE": str(tmp_path / precision / "models")}
    stack = Stack(var=tmp_path / precision, env=env)
    try:
        stack.start(ready_timeout=300)
        seed_demo(stack.url("gateway"), stack.url("classifier_service"))
        fitted = httpx.get(stack.url("classifier_service") + f"/v1/models/{DEMO_PIPELINE}/latest", timeout=30).json()
        fitted_on = fitted["input_contract"]["dtype"]
        dtype = httpx.get(stack.url("encoder_service") + "/v1/outputs", timeout=30).json()["outputs"]["embedding"]["contract"]["dtype"]
        r = httpx.post(stack.url("gateway") + f"/v1/pipelines/{DEMO_PIPELINE}/predict", json={"texts": TEXTS}, timeout=120)
        assert r.status_code == 200, r.text
        e = httpx.post(stack.url("encoder_service") + "/v1/encode", json={"texts": TEXTS, "output": "embedding"}, timeout=120)
        assert e.status_code == 200, e.text
        return dtype, fitted_on, r.json()["predictions"], np.array(e.json()["data"])
    finally:
        stack.stop()


def test_the_demo_pipeline_answers_under_auto_as_under_float32(tmp_path):
    chosen = choose_precision("auto", "torch", cpu_flags()).precision
    dtype, fitted_on, auto, auto_vectors = _demo_answers(tmp_path, "auto")
    assert dtype == chosen and fitted_on == "float32"
    if chosen == "float32":
        pytest.skip("auto is float32 on this CPU: nothing to compare")
    _, _, float32, float32_vectors = _demo_answers(tmp_path, "float32")
    cosine = (auto_vectors * float32_vectors).sum(1) / np.linalg.norm(auto_vectors, axis=1) / np.linalg.norm(float32_vectors, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert [a["label"] for a in auto] == [b["label"] for b in float32]
    # The near-ties (decided in float32) have float32's probabilities; the others bfloat16's, close to them.
    for a, b in zip(auto, float32):
        top, second = sorted(b["probabilities"].values(), reverse=True)[:2]
        tolerance = 1e-4 if top - second < 0.004 else 0.01  # within 0.004: within the 0.01 margin under bfloat16
        assert max(abs(a["probabilities"][c] - p) for c, p in b["probabilities"].items()) < tolerance, (a, b)
