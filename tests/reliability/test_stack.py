"""The three real processes with access control configured, as the soak runs them: callers reach
the encoder and the classifier only through the gateway, the gateway only with an API key, no
secret reaches a log; and a short soak (bench/soak.py) runs without an error."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.soak import Soak, stack_env
from seam.stack import Stack

pytestmark = pytest.mark.integration


@dataclass
class Running:
    stack: Stack
    api_key: str
    token: str
    var: Path

    def url(self, module: str) -> str:
        return self.stack.url(module)


@pytest.fixture(scope="module")
def running(tiny_bert, tmp_path_factory) -> Iterator[Running]:
    var = tmp_path_factory.mktemp("stack")
    api_key, token = "k-" + secrets.token_hex(16), "t-" + secrets.token_hex(16)
    env = {**stack_env(str(tiny_bert), api_key, token), "GATEWAY_LOG_LEVEL": "debug", "ENCODER_LOG_LEVEL": "info",
           "CLASSIFIER_LOG_LEVEL": "info"}
    stack = Stack(var=var, env=env)
    try:
        stack.start(ready_timeout=120)
        yield Running(stack, api_key, token, var)
    finally:
        stack.stop()


def test_only_the_gateway_reaches_the_upstreams_and_only_with_a_key(running):
    with httpx.Client(timeout=60) as http:
        encoder, classifier, gateway = (running.url(m) for m in ("encoder_service", "classifier_service", "gateway"))
        direct = [("POST", f"{encoder}/v1/encode", {"texts": ["hello"]}), ("GET", f"{classifier}/v1/models", None)]
        for method, url, body in direct:
            assert http.request(method, url, json=body).status_code == 401
            assert http.request(method, url, json=body, headers={"X-Seam-Internal-Token": "guess"}).status_code == 403
            assert http.request(method, url, json=body, headers={"X-Seam-Internal-Token": running.token}).status_code == 200
        for service in (encoder, classifier, gateway):  # probes stay open
            assert http.get(f"{service}/readyz").status_code == 200

        body = {"texts": ["where is my parcel", "i was charged twice", "my parcel is late", "refund the charge"],
                "labels": ["shipping", "billing", "shipping", "billing"]}
        refused = http.post(f"{gateway}/v1/pipelines/p/train", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer k-not-the-key"}
        assert http.post(f"{gateway}/v1/pipelines/p/train", json=body, headers=wrong).status_code == 403
        key = {"Authorization": f"Bearer {running.api_key}"}
        assert http.post(f"{gateway}/v1/pipelines/p/train", json=body, headers=key).status_code == 201
        predicted = http.post(f"{gateway}/v1/pipelines/p/predict", json={"texts": ["parcel"]}, headers=key)
        assert predicted.status_code == 200 and predicted.json()["version"] == 1


def test_a_short_soak_has_no_errors_and_versions_keep_their_answers(running):
    pids = {c.module: c.proc.pid for c in running.stack.children}
    soak = Soak(running.url("gateway"), pids, api_key=running.api_key, concurrency=3, train_share=0.05, train_rows=60)
    result = asyncio.run(soak.run(seconds=6, warmup_s=2))
    assert result["errors"] == 0, result["error_samples"]
    assert result["versions_trained"] >= 2 and result["versions_drifted"] == []
    assert result["requests"] > 20
    assert all(mb > 0 for mb in result["rss_mb"]["end"].values())
    assert running.stack.failed() is None


def test_no_secret_reaches_a_log(running):
    logs = "\n".join(p.read_text(errors="replace") for p in (running.var / "log").glob("*.log"))
    assert "POST /v1/pipelines/p/train" in logs  # the logs are there, and they are verbose
    for secret in (running.api_key, running.token, "k-not-the-key", "guess"):
        assert secret not in logs
