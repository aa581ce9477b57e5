"""The Kubernetes manifests (deploy/k8s, a kustomize base), validated offline: kubernetes-validate --strict
against the 1.33 schemas, and checked against what the services really serve and run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from seam.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VALIDATE = ROOT / ".tools" / "k8s" / "bin" / "kubernetes-validate"
COMPONENT_MODULE = {"encoder": "encoder_service", "classifier": "classifier_service", "gateway": "gateway"}


def resources_listed() -> list[str]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    """The kustomization built: by kubectl's kustomize where installed, else from its resources list."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        return [d for d in yaml.safe_load_all(built.stdout) if d]
    return [d for name in resources_listed() for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def find(documents: list[dict], kind: str, name: str) -> dict:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


def container(documents: list[dict], component: str) -> dict:
    (only,) = find(documents, "Deployment", f"seam-{component}")["spec"]["template"]["spec"]["containers"]
    return only


def test_kubernetes_validate_strict_accepts_every_manifest():
    assert VALIDATE.exists(), "run `make tools` (make test does) to install the validators"
    files = [str(K8S / name) for name in resources_listed()]
    result = subprocess.run([str(VALIDATE), "--strict", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    documents = sum(1 for name in resources_listed() for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    assert result.stdout.count(" passed for resource ") == documents


def test_the_kustomization_lists_every_manifest(documents):
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(resources_listed()) == on_disk
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents)
    assert kinds == sorted([
        ("Deployment", "seam-encoder"), ("Service", "seam-encoder"), ("HorizontalPodAutoscaler", "seam-encoder"),
        ("Deployment", "seam-classifier"), ("Service", "seam-classifier"), ("PersistentVolumeClaim", "seam-models"),
        ("Deployment", "seam-gateway"), ("Service", "seam-gateway"),
    ])


def test_each_container_runs_what_make_run_runs_on_its_port(documents):
    ports = {module: port for module, _, port in SERVICES}
    for component, module in COMPONENT_MODULE.items():
        c = container(documents, component)
        assert c["command"] == ["python", "-m", module]
        assert c["image"] == "seam:0.1.0"
        assert c["ports"] == [{"name": "http", "containerPort": ports[module]}]
        prefix = next(p for m, p, _ in SERVICES if m == module)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env[f"{prefix}PORT"] == str(ports[module]) and env[f"{prefix}HOST"] == "0.0.0.0"
        service = find(documents, "Service", f"seam-{component}")
        assert service["spec"]["ports"][0]["port"] == ports[module]
        assert service["spec"]["selector"].items() <= find(documents, "Deployment", f"seam-{component}")[
            "spec"]["template"]["metadata"]["labels"].items()
    gateway = {e["name"]: e.get("value") for e in container(documents, "gateway")["env"]}
    assert gateway["GATEWAY_ENCODER_URL"] == "http://seam-encoder:8001"
    assert gateway["GATEWAY_CLASSIFIER_URL"] == "http://seam-classifier:8002"


def test_probes_are_on_health_routes_the_services_serve(documents):
    from classifier_service.app import create_app as classifier
    from encoder_service.app import create_app as encoder
    from gateway.app import create_app as gateway

    apps = {"encoder": encoder(), "classifier": classifier(), "gateway": gateway()}  # nothing loads before startup
    for component, app in apps.items():
        c = container(documents, component)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        served = set(app.openapi()["paths"])
        assert {"/healthz", "/readyz", "/metrics"} <= served, component
        annotations = find(documents, "Deployment", f"seam-{component}")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == "/metrics"


def test_resources_security_autoscaling_and_the_shared_store(documents):
    sized = {"encoder": ("1", "768Mi", "2", "1Gi"), "classifier": ("250m", "512Mi", "1", "1Gi"),
             "gateway": ("250m", "256Mi", "1", "512Mi")}
    for component, (cpu, memory, cpu_limit, memory_limit) in sized.items():
        c = container(documents, component)
        assert c["resources"] == {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}
        pod = find(documents, "Deployment", f"seam-{component}")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    encoder_env = {e["name"]: e.get("value") for e in container(documents, "encoder")["env"]}
    assert encoder_env["ENCODER_THREADS"] == "2"  # = its CPU limit: torch does not oversubscribe
    hpa = find(documents, "HorizontalPodAutoscaler", "seam-encoder")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "seam-encoder"}
    assert hpa["minReplicas"] >= 1 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert find(documents, "PersistentVolumeClaim", "seam-models")["spec"]["accessModes"] == ["ReadWriteMany"]
    classifier = find(documents, "Deployment", "seam-classifier")["spec"]["template"]["spec"]
    assert classifier["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "seam-models"}}]
    store = {e["name"]: e.get("value") for e in container(documents, "classifier")["env"]}["CLASSIFIER_STORE"]
    assert container(documents, "classifier")["volumeMounts"] == [{"name": "models", "mountPath": store}]
    assert classifier["securityContext"]["fsGroup"] == 10001  # the volume is writable by the image's user


OBJECT_STORE = ROOT / "deploy" / "k8s-object-store"


def test_the_object_store_overlay_drops_the_volume_and_reads_credentials_from_a_secret(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for kustomize) is not installed")
    built = subprocess.run([kubectl, "kustomize", str(OBJECT_STORE)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    deployment = find(documents, "Deployment", "seam-classifier")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    assert [v for v in spec["volumes"] if "persistentVolumeClaim" in v] == []
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CLASSIFIER_STORE"].startswith("s3://")
    assert c["envFrom"] == [{"secretRef": {"name": "seam-object-store"}}]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {env["CLASSIFIER_STORE_CACHE"]}
    assert not any(e["name"].startswith("AWS_") for e in c["env"])  # never in plain text
    manifest = tmp_path / "object-store.yaml"
    manifest.write_text(built.stdout)
    result = subprocess.run([str(VALIDATE), "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
