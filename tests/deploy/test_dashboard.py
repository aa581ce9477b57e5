"""deploy/grafana (dashboard and provisioning) and deploy/prometheus.yml, checked offline. Whether every
metric the dashboard queries exists on running services: tests/integration/test_observability.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support import dashboard_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "seam.json"
def test_the_dashboard_covers_what_an_operator_asks():
    names = dashboard_metrics()
    assert {"seam_http_requests", "seam_http_request_duration_seconds", "seam_encoder_queue_depth",
            "seam_encoder_batch_texts", "seam_encoder_batch_tokens", "seam_compatibility_refusals",
            "seam_upstream_errors"} <= names
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    grouped = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "by (job, route)" in grouped and "by (job, field, error)" in grouped and "by (upstream, stage, error)" in grouped


def test_the_dashboard_uses_the_provisioned_datasource():
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in panel["targets"])
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/seam.yml").read_text())
    overlay = yaml.safe_load((ROOT / "deploy/monitoring.compose.yml").read_text())
    mounts = overlay["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


def test_prometheus_scrapes_each_compose_service_on_its_port():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    seam = {name: service for name, service in compose["services"].items()
            if service.get("command", [])[:2] == ["python", "-m"]}  # not the object store beside them
    assert set(targets) == set(seam) == {"encoder", "classifier", "gateway"}
    for name, service in seam.items():
        port = service["environment"][f"{'ENCODER' if name == 'encoder' else name.upper()}_PORT"]
        assert targets[name] == [f"{name}:{port}"]


def test_docker_compose_accepts_the_monitoring_overlay():
    compose = ROOT / ".tools" / "bin" / "docker-compose"
    assert compose.exists(), "run `make tools` (make test does) to install the validators"
    result = subprocess.run([str(compose), "-f", "docker-compose.yml", "-f", "deploy/monitoring.compose.yml", "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
