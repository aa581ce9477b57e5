"""`make run`'s stack under ENCODER_PRECISION=auto: the demo pipeline is fitted (on float32 vectors)
and answers whichever precision the encoder chose, with the labels float32 gives, near-ties included
(decided again in float32: GATEWAY_NEAR_TIE_MARGIN); bfloat16's vectors stay within cosine 0.9999 of
float32's (bfloat16 matmuls over a float32 stream: encoder_service/prepack.py).

What float32 answers is the fitted version's prediction on the vectors the same encoder computes in
float32 on request, which a float32 encoder computes too (within 1e-5: tests/encoder_service/test_prepack.py):
one stack, where two would take twice as long."""

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


def test_the_demo_pipeline_answers_under_auto_as_under_float32(tmp_path):
    chosen = choose_precision("auto", "torch", cpu_flags()).precision
    env = {"ENCODER_PRECISION": "auto", "ENCODER_PORT": str(free_port()), "CLASSIFIER_PORT": str(free_port()), "GATEWAY_PORT": str(free_port()),
           "CLASSIFIER_STORE": str(tmp_path / "models")}
    stack = Stack(var=tmp_path, env=env)
    try:
        stack.start(ready_timeout=300)
        seed_demo(stack.url("gateway"), stack.url("classifier_service"))
        with httpx.Client(timeout=120) as http:
            fitted = http.get(stack.url("classifier_service") + f"/v1/models/{DEMO_PIPELINE}/latest").json()
            offered = http.get(stack.url("encoder_service") + "/v1/outputs").json()
            assert offered["outputs"]["embedding"]["contract"]["dtype"] == chosen
            assert fitted["input_contract"]["dtype"] == "float32"
            if chosen == "float32":
                pytest.skip("auto is float32 on this CPU: nothing to compare")
            served = http.post(stack.url("gateway") + f"/v1/pipelines/{DEMO_PIPELINE}/predict", json={"texts": TEXTS})
            assert served.status_code == 200, served.text
            vectors = {}
            for precision in (None, "float32"):
                e = http.post(stack.url("encoder_service") + "/v1/encode",
                              json={"texts": TEXTS, "output": "embedding", "precision": precision})
                assert e.status_code == 200, e.text
                vectors[precision] = np.array(e.json()["data"])
            assert e.json()["contract_id"] == offered["float32"]["embedding"]["id"]
            reference = http.post(stack.url("classifier_service") + f"/v1/models/{DEMO_PIPELINE}/predict",
                                  params={"version": fitted["version"]}, json={"features": vectors["float32"].tolist()})
            assert reference.status_code == 200, reference.text
    finally:
        stack.stop()
    auto, float32 = served.json()["predictions"], reference.json()["predictions"]
    bf16, f32 = vectors[None], vectors["float32"]
    cosine = (bf16 * f32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(f32, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.abs(bf16 - f32).max() > 0  # the served vectors really are bfloat16's
    assert [a["label"] for a in auto] == [b["label"] for b in float32]
    # The near-ties (decided in float32) have float32's probabilities; the others bfloat16's, close to them.
    for a, b in zip(auto, float32):
        top, second = sorted(b["probabilities"].values(), reverse=True)[:2]
        tolerance = 1e-4 if top - second < 0.004 else 0.01  # within 0.004: within the 0.01 margin under bfloat16
        assert max(abs(a["probabilities"][c] - p) for c, p in b["probabilities"].items()) < tolerance, (a, b)
