"""`make run`'s stack under ENCODER_PRECISION=auto: the demo pipeline is fitted and answers whichever
precision the encoder chose, with the labels float32 gives."""

from __future__ import annotations

import httpx
import pytest

from bench.workload import sentences
from encoder_service.precision import choose_precision, cpu_flags
from seam.demo import DEMO_PIPELINE, seed_demo
from seam.stack import Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

TEXTS = sentences(64, seed=7)


def _demo_labels(tmp_path, precision: str) -> tuple[str, list[str]]:
    env = {"ENCODER_PRECISION": precision, "ENCODER_PORT": str(free_port()), "CLASSIFIER_PORT": str(free_port()),
           "GATEWAY_PORT": str(free_port()), "CLASSIFIER_STORE": str(tmp_path / precision / "models")}
    stack = Stack(var=tmp_path / precision, env=env)
    try:
        stack.start(ready_timeout=300)
        seed_demo(stack.url("gateway"), stack.url("classifier_service"))
        dtype = httpx.get(stack.url("encoder_service") + "/v1/outputs", timeout=30).json()["outputs"]["embedding"]["contract"]["dtype"]
        r = httpx.post(stack.url("gateway") + f"/v1/pipelines/{DEMO_PIPELINE}/predict", json={"texts": TEXTS}, timeout=120)
        assert r.status_code == 200, r.text
        return dtype, [p["label"] for p in r.json()["predictions"]]
    finally:
        stack.stop()


def test_the_demo_pipeline_answers_under_auto_as_under_float32(tmp_path):
    chosen = choose_precision("auto", "torch", cpu_flags()).precision
    dtype, auto_labels = _demo_labels(tmp_path, "auto")
    assert dtype == chosen
    if chosen == "float32":
        pytest.skip("auto is float32 on this CPU: nothing to compare")
    _, float32_labels = _demo_labels(tmp_path, "float32")
    agreement = sum(a == b for a, b in zip(auto_labels, float32_labels)) / len(TEXTS)
    assert agreement >= 0.95, (agreement, auto_labels, float32_labels)
