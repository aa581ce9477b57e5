"""The real clients users already have, against real processes on 127.0.0.1: the `seam` CLI (which also
starts the stack here, with `seam up`), tritonclient's HTTP client (Open Inference Protocol), the
official openai client (/v1/embeddings), and a Prometheus scrape of all three services.

One stack for the module, as `make run` starts it, with a tiny encoder for speed.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.processes import ROOT, free_port
from tests.support import SAMPLE

pytestmark = pytest.mark.integration

PROBE = ["I was charged twice this month", "my parcel never arrived"]


@dataclass
class Stack:
    gateway: str
    encoder: str
    classifier: str
    output: Path

    def hostport(self, url: str) -> str:
        return url.removeprefix("http://")


def seam(*args: str, gateway: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: `python -m seam.cli ...` (the `seam` entry point runs the same main)."""
    head = ["--gateway", gateway] if gateway else []
    return subprocess.run([sys.executable, "-m", "seam.cli", *head, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("seam-up")
    ports = {"ENCODER_": free_port(), "CLASSIFIER_": free_port(), "GATEWAY_": free_port()}
    env = {**os.environ, "ENCODER_MODEL": str(tiny_bert), "ENCODER_THREADS": "1",
           **{f"{prefix}PORT": str(port) for prefix, port in ports.items()}}
    output = var / "seam-up.out"
    with output.open("wb") as out:
        # A session of its own: if `seam up` cannot stop its children, the teardown ends the whole group.
        proc = subprocess.Popen([sys.executable, "-m", "seam.cli", "up", "--var", str(var)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "seam is up" not in output.read_text(errors="replace"):
            assert proc.poll() is None, f"seam up exited with {proc.returncode}:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"seam up not up after 180s:\n{output.read_text()}"
            time.sleep(0.2)
        url = lambda prefix: f"http://127.0.0.1:{ports[prefix]}"  # noqa: E731
        yield Stack(url("GATEWAY_"), url("ENCODER_"), url("CLASSIFIER_"), output)
    finally:
        proc.send_signal(signal.SIGTERM)  # as `kill` or a supervisor stops it: the services go down with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output.read_text()
    for port in ports.values():
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


# -- seam up / train / predict / check -----------------------------------------------------------------


def test_seam_up_starts_the_stack_and_the_demo(stack):
    text = stack.output.read_text()
    assert "trained support-intents v1" in text and stack.gateway in text
    for url in (stack.gateway, stack.encoder, stack.classifier):
        assert httpx.get(url + "/readyz").status_code == 200


def test_train_streams_a_csv_in_chunks_with_a_progress_bar(stack, tmp_path):
    with SAMPLE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "body", "intent"])
        writer.writerows([i, r["text"], r["label"]] for i, r in enumerate(rows))
    done = seam("train", "tickets", str(path), "--text-column", "body", "--label-column", "intent",
                "--estimator", "logistic_regression", "--chunk-rows", "64", gateway=stack.gateway)
    assert done.returncode == 0, done.stderr
    assert '"name": "tickets"' in done.stdout and '"version": 1' in done.stdout
    progress = done.stderr.splitlines()  # text=True turns the bar's carriage returns into newlines
    assert any(f"100.0% {len(rows)} rows sent" in line for line in progress), done.stderr
    assert "training tickets (embedding, logistic_regression) from tickets.csv" in done.stderr


def test_predict_prints_a_label_per_text(stack):
    done = seam("predict", "support-intents", *PROBE, gateway=stack.gateway)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "pipeline support-intents v1" and lines[1].split() == ["label", "p", "text"]
    assert [line.endswith(text) for line, text in zip(lines[3:], PROBE)] == [True, True]


def test_evaluate_prints_the_figures_and_plots_them(stack, tmp_path):
    out = tmp_path / "eval.png"
    done = seam("evaluate", "support-intents", str(SAMPLE), "--version", "1", "--plot", str(out), gateway=stack.gateway)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "pipeline support-intents v1 (classification), 300 texts"
    assert any(line.split()[:1] == ["accuracy"] for line in lines) and "confusion matrix" in done.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = seam("evaluate", "support-intents", str(SAMPLE), "--target-column", "label", gateway=stack.gateway)
    assert bad.returncode == 2 and "is not a number" in bad.stderr


def test_check_prints_the_report_as_a_table(stack):
    fits = seam("check", "support-intents", "--gateway", stack.gateway)
    assert fits.returncode == 0, fits.stderr
    assert "pipeline support-intents v1 (logistic_regression): compatible" in fits.stdout
    assert "link  producer" in fits.stdout and "yes" in fits.stdout
    refused = seam("check", "legacy-bert-base", gateway=stack.gateway)
    assert refused.returncode == 3
    assert ": INCOMPATIBLE" in refused.stdout
    header = next(line for line in refused.stdout.splitlines() if line.strip().startswith("field"))
    assert header.split() == ["field", "expected", "actual", "why"]
    dim = next(line for line in refused.stdout.splitlines() if line.strip().startswith("dim "))
    assert dim.split()[1:3] == ["768", "32"]


def test_errors_print_the_problem_not_a_traceback(stack, tmp_path):
    missing = seam("predict", "nope", "hello", gateway=stack.gateway)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: 404 Pipeline not found: no pipeline named 'nope'")
    refused = seam("predict", "legacy-bert-base", "hello", gateway=stack.gateway)
    assert refused.returncode == 2 and "409 Incompatible pipeline" in refused.stderr
    assert "- dim: expected 768, got 32" in refused.stderr
    empty_text = tmp_path / "bad.csv"
    empty_text.write_text("text,label\nhello,a\n  ,b\nparcel,a\n")
    bad = seam("train", "bad", str(empty_text), gateway=stack.gateway)
    assert bad.returncode == 2 and "texts[1] is empty" in bad.stderr
    assert f"(row 1 is line 3 of {empty_text})" in bad.stderr
    columns = seam("train", "bad", str(SAMPLE), "--label-column", "intent", gateway=stack.gateway)
    assert columns.returncode == 2 and "has no column 'intent'; its columns are ['text', 'label']" in columns.stderr
    gone = seam("train", "bad", str(tmp_path / "nowhere.csv"), gateway=stack.gateway)
    assert gone.returncode == 2 and "cannot read" in gone.stderr
    for done in (missing, refused, bad, columns, gone):
        assert "Traceback" not in done.stderr


def test_the_seam_entry_point_is_installed():
    script = Path(sys.executable).with_name("seam")
    assert script.exists(), "pip install -e . installs the `seam` command"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    commands = re.search(r"\{([a-z,]+)\}", done.stdout)
    assert done.returncode == 0 and commands is not None, done.stdout
    assert {"up", "train", "predict", "check"} <= set(commands.group(1).split(","))  # and the later ones (encoders, ...)


# -- tritonclient (Open Inference Protocol) -----------------------------------------------------------


def _texts(texts: list[str], binary: bool) -> httpclient.InferInput:
    item = httpclient.InferInput("TEXT", [len(texts)], "BYTES")
    item.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return item


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_embeds_with_the_encoder(stack, binary):
    client = httpclient.InferenceServerClient(url=stack.hostport(stack.encoder))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("embedding")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("embedding")
    assert meta["outputs"][0] == {"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 32]}
    outputs = [httpclient.InferRequestedOutput("EMBEDDING", binary_data=binary)]
    result = client.infer("embedding", [_texts(PROBE, binary)], outputs=outputs)
    expected = httpx.post(stack.encoder + "/v1/encode", json={"texts": PROBE}).json()["data"]
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), np.array(expected), atol=1e-6)
    tokens = client.infer("tokens", [_texts(PROBE, binary)])  # no outputs named: all of them, binary
    assert tokens.as_numpy("TOKENS").shape[::2] == (2, 32) and tokens.as_numpy("LENGTHS").dtype == np.int32
    with pytest.raises(InferenceServerException) as refused:
        client.infer("probabilities", [_texts(PROBE, binary)])
    assert refused.value.status() == "404" and "no model 'probabilities'" in refused.value.message()
    client.close()


def test_tritonclient_chains_encoder_output_into_a_classifier_model(stack):
    encoder = httpclient.InferenceServerClient(url=stack.hostport(stack.encoder))
    classifier = httpclient.InferenceServerClient(url=stack.hostport(stack.classifier))
    meta = classifier.get_model_metadata("support-intents")
    assert meta["inputs"] == [{"name": "FEATURES", "datatype": "FP32", "shape": [-1, 32]}]
    assert classifier.is_model_ready("support-intents", "1") and not classifier.is_model_ready("nope")
    vectors = encoder.infer("embedding", [_texts(PROBE, True)]).as_numpy("EMBEDDING")
    features = httpclient.InferInput("FEATURES", list(vectors.shape), "FP32")
    features.set_data_from_numpy(vectors)
    result = classifier.infer("support-intents", [features], model_version="1")
    gateway = httpx.post(stack.gateway + "/v1/pipelines/support-intents/predict", json={"texts": PROBE}).json()
    assert [label.decode() for label in result.as_numpy("LABEL")] == [p["label"] for p in gateway["predictions"]]
    assert result.as_numpy("PROBABILITIES").shape == (2, len(meta["parameters"]["classes"]))
    narrow = httpclient.InferInput("FEATURES", [2, 31], "FP32")
    narrow.set_data_from_numpy(vectors[:, :31].copy())
    with pytest.raises(InferenceServerException) as refused:
        classifier.infer("support-intents", [narrow])
    assert refused.value.status() == "422" and "dim: expected 32, got 31" in refused.value.message()
    encoder.close()
    classifier.close()


# -- openai -------------------------------------------------------------------------------------------


def test_openai_client_gets_the_encoders_embeddings(stack):
    client = openai.OpenAI(base_url=stack.encoder + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    expected = httpx.post(stack.encoder + "/v1/encode", json={"texts": PROBE}).json()
    packed = client.embeddings.create(model=model, input=PROBE)  # the client asks for base64 and decodes it
    np.testing.assert_allclose([d.embedding for d in packed.data], expected["data"], atol=1e-6)
    assert [d.index for d in packed.data] == [0, 1] and packed.model == model
    assert packed.usage.prompt_tokens == packed.usage.total_tokens == sum(expected["token_counts"])
    one = client.embeddings.create(model=model, input=PROBE[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected["data"][0], atol=1e-6)
    raw = client.embeddings.with_raw_response.create(model=model, input="hi", encoding_format="base64").http_response
    assert len(np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), "<f4")) == 32
    with pytest.raises(openai.NotFoundError) as refused:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert f"this encoder serves '{model}', not 'text-embedding-3-small'" in str(refused.value)
    assert refused.value.code == "model-not-found"


# -- Prometheus ---------------------------------------------------------------------------------------


def _samples(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url + "/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_scrape_of_each_service_parses_and_moves(stack):
    before = _samples(stack.gateway)
    refused = frozenset({("field", "dim"), ("error", "incompatible-pipeline")})
    assert httpx.post(stack.gateway + "/v1/pipelines/legacy-bert-base/predict", json={"texts": ["hi"]}).status_code == 409
    assert httpx.post(stack.gateway + "/v1/pipelines/support-intents/predict", json={"texts": PROBE}).status_code == 200
    gateway = _samples(stack.gateway)
    assert gateway[("seam_compatibility_refusals_total", refused)] == before.get(("seam_compatibility_refusals_total", refused), 0) + 1
    predicted = frozenset({("method", "POST"), ("route", "/v1/pipelines/{name}/predict"), ("status", "200")})
    assert gateway[("seam_http_requests_total", predicted)] >= 1
    assert gateway[("seam_http_request_duration_seconds_count", predicted)] == gateway[("seam_http_requests_total", predicted)]
    encoder = _samples(stack.encoder)
    assert encoder[("seam_encoder_tokens_total", frozenset())] > 0
    assert encoder[("seam_encoder_batch_texts_count", frozenset())] >= 1
    assert ("seam_encoder_queue_depth", frozenset()) in encoder
    classifier = _samples(stack.classifier)
    fitted = frozenset({("method", "POST"), ("route", "/v1/models/{name}/fit"), ("status", "201")})
    assert classifier[("seam_http_requests_total", fitted)] >= 2  # the demo's two models
