"""The HTTP edge against real processes and real sockets: clients trickling their bodies cannot take
every in-flight slot, and the largest request the default settings accept stays inside the memory
limits of the Kubernetes manifests (deploy/k8s), read from the process's peak RSS (VmHWM)."""

from __future__ import annotations

import random
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import ServiceProcess, all_running, running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def manifest_limit(name: str) -> int:
    """``resources.limits.memory`` of deploy/k8s/<name>.yaml, in bytes."""
    text = (ROOT / "deploy" / "k8s" / f"{name}.yaml").read_text()
    limits = text[text.index("limits:"):]
    value = re.search(r"memory:\s*(\d+)(Mi|Gi)", limits)
    return int(value.group(1)) * (MIB if value.group(2) == "Mi" else 1024 * MIB)


def slow_sender(port: int, path: str) -> socket.socket:
    """A client that sends its headers and one byte of a 100-byte body, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_senders_hold_no_in_flight_slot_and_get_408(tmp_path):
    env = {"CLASSIFIER_STORE": str(tmp_path / "models"), "CLASSIFIER_MAX_IN_FLIGHT": "4",
           "CLASSIFIER_BODY_TIMEOUT_S": "1.5"}
    with running("classifier_service", env) as classifier:
        senders = [slow_sender(classifier.port, "/v1/models/m/predict") for _ in range(12)]
        started = time.monotonic()
        try:
            with httpx.Client(base_url=classifier.url, timeout=10) as http:
                for _ in range(3):  # three times the in-flight limit is trickling: others still get in
                    answer = http.post("/v1/models/nobody/predict", json={"features": [[1.0]]})
                    assert answer.status_code == 404, answer.text
            for sock in senders:
                answer = read_all(sock)  # answered, then closed
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
                assert b"connection: close" in answer.lower()
                assert b"CLASSIFIER_BODY_TIMEOUT_S" in answer
            assert time.monotonic() - started < 6
        finally:
            for sock in senders:
                sock.close()


def long_texts(n: int, chars: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "where is my parcel the package was lost delivery arrived late refund my payment invoice wrong".split()
    texts = []
    for i in range(n):
        text = f"{i} " + " ".join(rng.choice(words) for _ in range(chars // 4))
        texts.append(text[:chars])
    return texts


@pytest.mark.real_model
def test_the_largest_encoder_request_stays_inside_its_memory_limit(minilm_path, tmp_path):
    env = {"ENCODER_MODEL": str(minilm_path), "ENCODER_CACHE_DIR": str(tmp_path / "cache")}
    with running("encoder_service", env, log=tmp_path / "encoder.log") as encoder:
        with httpx.Client(base_url=encoder.url, timeout=300) as http:
            limits = {"max_texts": 256, "max_chars": 20_000}  # the defaults (ENCODER_MAX_TEXTS, ENCODER_MAX_CHARS)
            texts = long_texts(limits["max_texts"], limits["max_chars"])
            answer = http.post("/v1/encode", json={"texts": texts})
            assert answer.status_code == 200, answer.text
            assert all(answer.json()["truncated"])
        peak = peak_rss(encoder.proc.pid)
    limit = manifest_limit("encoder")
    print(f"encoder peak RSS {peak / MIB:.0f} MiB, limit {limit / MIB:.0f} MiB")
    assert peak < limit, f"peak RSS {peak / MIB:.0f} MiB over the manifest's {limit / MIB:.0f} MiB"


def test_the_largest_gateway_predict_stays_inside_its_memory_limit(tiny_bert, tmp_path):
    """20 classes with labels of GATEWAY_MAX_LABEL_CHARS each, 256 texts (GATEWAY_MAX_TEXTS) of 20,000
    characters (ENCODER_MAX_CHARS): every prediction repeats every label."""
    encoder = ServiceProcess("encoder_service", {"ENCODER_MODEL": str(tiny_bert), "ENCODER_THREADS": "1"})
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(tmp_path / "models"),
                                                       "CLASSIFIER_TORCH_THREADS": "1"})
    gateway = ServiceProcess("gateway", {"GATEWAY_ENCODER_URL": encoder.url, "GATEWAY_CLASSIFIER_URL": classifier.url})
    with all_running(encoder, classifier, gateway):
        with httpx.Client(base_url=gateway.url, timeout=300) as http:
            labels = [f"{c:02d}" + "x" * 198 for c in range(20)]  # 200 characters, the default limit
            texts = long_texts(60, 200)
            trained = http.post("/v1/pipelines/wide/train", json={"texts": texts, "labels": [labels[i % 20] for i in range(60)]})
            assert trained.status_code == 201, trained.text
            answer = http.post("/v1/pipelines/wide/predict", json={"texts": long_texts(256, 20_000, seed=1)})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"][0]["probabilities"]) == 20
            refused = http.post("/v1/pipelines/wider/train", json={"texts": texts[:2], "labels": ["a", "b" * 201]})
            assert refused.status_code == 413 and "GATEWAY_MAX_LABEL_CHARS" in refused.text
        peak = peak_rss(gateway.proc.pid)
    limit = manifest_limit("gateway")
    print(f"gateway peak RSS {peak / MIB:.0f} MiB, limit {limit / MIB:.0f} MiB")
    assert peak < limit, f"peak RSS {peak / MIB:.0f} MiB over the manifest's {limit / MIB:.0f} MiB"
