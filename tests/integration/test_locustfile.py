"""bench/locustfile.py runs headless against a real stack: train once, predict many, no failures."""

from __future__ import annotations

import csv
import subprocess
import sys

import httpx
import pytest

from bench.workload import training_data

from seam.stack import Stack
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.integration


def test_locustfile_trains_once_and_predicts_without_failures(tiny_bert, tmp_path):
    ports = {"ENCODER_PORT": free_port(), "CLASSIFIER_PORT": free_port(), "GATEWAY_PORT": free_port()}
    stack = Stack(var=tmp_path, env={"ENCODER_MODEL": str(tiny_bert), **{k: str(v) for k, v in ports.items()}})
    try:
        stack.start()
        # Trained up front so a slow machine spends the short run predicting, not fitting.
        texts, labels = training_data()
        trained = httpx.post(stack.url("gateway") + "/v1/pipelines/locust-intents/train", timeout=300,
                             json={"texts": texts, "labels": labels, "feature": "embedding"})
        assert trained.status_code == 201, trained.text
        result = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "bench/locustfile.py", "--headless", "--host", stack.url("gateway"),
             "--users", "4", "--spawn-rate", "4", "--run-time", "6s", "--csv", str(tmp_path / "locust"), "--only-summary"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
    finally:
        stack.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "locust_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert int(rows["Aggregated"]["Request Count"]) > 10
    assert int(rows["Aggregated"]["Failure Count"]) == 0
