"""docker-compose.yml, validated offline (no Docker engine here) by docker-compose 1.29 itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from seam.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / ".tools" / "bin" / "docker-compose"
MODULE_OF = {"encoder": "encoder_service", "classifier": "classifier_service", "gateway": "gateway"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_accepts_the_file():
    assert COMPOSE.exists(), "run `make tools` (make test does) to install the validators"
    result = subprocess.run([str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def stack_services(compose: dict) -> dict:
    """The services `docker compose up` starts (the optional profiles' left out)."""
    return {name: s for name, s in compose["services"].items() if not s.get("profiles")}


def resolved(**env: str) -> dict:
    """The file as docker-compose reads it, with ``env`` set (and no other CLASSIFIER_/AWS_ variable)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLASSIFIER_", "AWS_"))}
    result = subprocess.run([str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, cwd=ROOT, env={**clean, **env})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_each_service_runs_what_make_run_runs(compose):
    modules = {module for module, _, _ in SERVICES}
    for name, service in stack_services(compose).items():
        assert service["command"] == ["python", "-m", MODULE_OF[name]]
        assert MODULE_OF[name] in modules


def test_health_checks_and_start_order(compose):
    services = stack_services(compose)
    for name, service in services.items():
        assert "readyz" in " ".join(service["healthcheck"]["test"]), name
    assert services["gateway"]["depends_on"] == {
        "encoder": {"condition": "service_healthy"},
        "classifier": {"condition": "service_healthy"},
    }
    assert resolved()["services"]["classifier"]["environment"]["CLASSIFIER_STORE"] == "/var/lib/seam/models"
    assert "models:/var/lib/seam/models" in services["classifier"]["volumes"]
    assert "models" in compose["volumes"]


def test_the_image_runs_as_a_non_root_user_with_cpu_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER seam" in dockerfile
    assert "torch==2.13.0" in dockerfile and "whl/cpu" in dockerfile


def test_the_object_store_profile_adds_seaweedfs_and_points_the_classifier_at_it(compose):
    seaweedfs = compose["services"]["seaweedfs"]
    assert seaweedfs["profiles"] == ["object-store"]
    assert "-master.telemetry=false" in seaweedfs["command"] and "-bucket=seam" in seaweedfs["command"]
    classifier = resolved(CLASSIFIER_STORE="s3://seam/models")["services"]["classifier"]["environment"]
    assert classifier["CLASSIFIER_STORE"] == "s3://seam/models"
    assert classifier["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert classifier["AWS_ACCESS_KEY_ID"] == seaweedfs["environment"]["AWS_ACCESS_KEY_ID"].split(":-")[1].rstrip("}")
