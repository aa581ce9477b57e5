"""Scoped API keys on a real gateway process: scopes, pipelines, rates, metrics by key id, admin actions
logged, and the keys file re-read on SIGHUP (a broken file keeps the previous keys)."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.processes import ServiceProcess
from tests.support import keys_toml, sample

pytestmark = pytest.mark.integration

KEYS = {"reporting": "k-reporting-11aa22bb", "trainer": "k-trainer-33cc44dd", "ops": "k-ops-55ee66ff"}
TOML = keys_toml(
    reporting={"key": KEYS["reporting"], "scopes": ["predict"], "pipelines": ["support-*"], "rate": 1, "burst": 3},
    trainer={"key": KEYS["trainer"], "scopes": ["predict", "train"]},
    ops={"key": KEYS["ops"], "scopes": ["admin"]},
)


def test_scoped_keys_on_real_processes_and_rotation_on_sighup(tmp_path, tiny_bert):
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(TOML)
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(tmp_path / "models"),
                                                       "CLASSIFIER_TORCH_THREADS": "1"}, log=tmp_path / "classifier.log")
    encoder = ServiceProcess("encoder_service", {"ENCODER_MODEL": str(tiny_bert), "ENCODER_THREADS": "1"},
                             log=tmp_path / "encoder.log")
    gateway = ServiceProcess("gateway", {"GATEWAY_ENCODER_URL": encoder.url, "GATEWAY_CLASSIFIER_URL": classifier.url,
                                         "GATEWAY_API_KEYS_FILE": str(keys_file), "GATEWAY_PIPELINE_TTL_S": "0"},
                             log=tmp_path / "gateway.log")
    services = (classifier, encoder, gateway)
    try:
        for service in services:
            service.start(wait_ready=False)
        for service in services:
            service.wait_ready()
        with httpx.Client(base_url=gateway.url, timeout=120) as http:
            def as_key(key_id: str, method: str, path: str, **kwargs) -> httpx.Response:
                return http.request(method, path, headers={"Authorization": f"Bearer {KEYS[key_id]}"}, **kwargs)

            texts, labels = sample()
            body = {"texts": texts, "labels": labels}
            refused = as_key("reporting", "POST", "/v1/pipelines/support-intents/train", json=body)
            assert refused.status_code == 403 and "lacks the 'train' scope" in refused.json()["detail"]
            assert as_key("trainer", "POST", "/v1/pipelines/support-intents/train", json=body).status_code == 201
            probe = {"texts": ["my parcel never arrived"]}
            answers = [as_key("reporting", "POST", "/v1/pipelines/support-intents/predict", json=probe)
                       for _ in range(4)]
            assert [a.status_code for a in answers[:3]] == [200, 200, 200]  # the burst
            assert answers[3].status_code == 429 and answers[3].headers["retry-after"] == "1"
            assert as_key("ops", "DELETE", "/v1/pipelines/support-intents").status_code == 204
            metrics = http.get("/metrics").text
            assert 'seam_api_key_requests_total{key="reporting",outcome="rate"} 1.0' in metrics
            assert 'seam_api_key_requests_total{key="reporting",outcome="scope"} 1.0' in metrics
            assert 'seam_api_key_requests_total{key="ops",outcome="allowed"} 1.0' in metrics

            # Rotation: the new file is in force after SIGHUP, without a restart.
            keys_file.write_text('[[keys]]\nid = "rotated"\nkey = "k-rotated-77008899"\n')
            gateway.proc.send_signal(signal.SIGHUP)
            rotated = {"Authorization": "Bearer k-rotated-77008899"}
            deadline = time.monotonic() + 10
            while http.get("/v1/pipelines", headers=rotated).status_code != 200:
                assert time.monotonic() < deadline, gateway.log_text()
                time.sleep(0.05)
            assert as_key("trainer", "GET", "/v1/pipelines").status_code == 403
            # A file that does not parse keeps the previous keys, and says why in the log.
            keys_file.write_text("[[keys]\n")
            gateway.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "not reloaded" not in gateway.log_text():
                assert time.monotonic() < deadline, gateway.log_text()
                time.sleep(0.05)
            assert http.get("/v1/pipelines", headers=rotated).status_code == 200
            assert gateway.proc.poll() is None
        log = gateway.log_text()
        assert "admin action DELETE /v1/pipelines/support-intents by API key 'ops' -> 204" in log
        assert "not valid TOML" in log
        assert all(secret not in log for secret in KEYS.values())
    finally:
        for service in services:
            service.stop()
