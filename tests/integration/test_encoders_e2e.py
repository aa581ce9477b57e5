"""Several encoders behind one gateway, with real processes on 127.0.0.1.

- Two encoders on tiny models of different widths: a pipeline fitted through each, both served at once,
  one pipeline's two versions side by side (``?version=``); one encoder stopped: 503 naming it for its
  pipelines only, the others still 200, /readyz still ready and saying which encoder is not.
- MiniLM in float32 and in bfloat16 (the same space computed differently): a version fitted on float32
  served by the bfloat16 encoder alone, accepted by measurement on its reference sample; refused with
  the measurement when the agreement asked for is out of reach; a version that kept no reference sample
  refused with the reason. A version trained through the bfloat16 encoder is fitted on float32 vectors,
  and answers the benchmark's texts with float32's labels: its near-ties decided again in float32.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bench.workload import sentences
from tests.processes import ServiceProcess, all_running, encoder, gateway, predict, started, train

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=180) as client:
        yield client


def test_two_encoders_of_different_widths_serve_side_by_side(tmp_path, http, tiny_bert, tiny_bert_wide):
    var = tmp_path
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(var / "models")}, log=var / "classifier.log")
    small, wide = encoder(tiny_bert, var, "small"), encoder(tiny_bert_wide, var, "wide")
    gw = gateway(var, "gw", classifier, {"small": small, "wide": wide})
    try:
        started(classifier, small, wide, gw)
        listing = http.get(f"{gw.url}/v1/encoders").json()["encoders"]
        assert [(e["name"], e["url"], e["ready"]) for e in listing] == [("small", small.url, True), ("wide", wide.url, True)]
        assert [e["outputs"]["embedding"]["dim"] for e in listing] == [32, 48]
        assert len({e["outputs"]["embedding"]["id"] for e in listing}) == 2  # each contract has its own id

        unknown = train(http, gw, "x", encoder="mpnet")
        assert unknown.status_code == 422 and unknown.json()["type"].endswith("/unknown-encoder")
        assert "small, wide" in unknown.json()["detail"] and "GATEWAY_ENCODERS" in unknown.json()["detail"]

        first = train(http, gw, "on-small")  # the first encoder is the default
        assert first.status_code == 201, first.text
        assert first.json()["source"] == {"type": "encoder", "output": "embedding", "encoder": "small"}
        assert first.json()["retained"] == {"texts": 300, "reference_sample": 64}
        on_wide = train(http, gw, "on-wide", encoder="wide")
        assert on_wide.status_code == 201 and on_wide.json()["input_contract"]["dim"] == 48
        # One pipeline, version 1 on the small encoder and version 2 on the wide one.
        assert train(http, gw, "moved", encoder="small").status_code == 201
        assert train(http, gw, "moved", encoder="wide").json()["version"] == 2

        for name, version in (("on-small", None), ("on-wide", None), ("moved", 1), ("moved", 2)):
            response = predict(http, gw, name, version)
            assert response.status_code == 200, response.text
        for name, expected in (("on-small", "small"), ("on-wide", "wide"), ("moved", "wide")):
            (link,) = http.get(f"{gw.url}/v1/pipelines/{name}").json()["chain"]
            assert link["encoder"] == expected and link["acceptance"] == {"accepted": "exact"}, link
            assert link["producer"].startswith(f"encoder {expected} ")

        wide.stop()
        down = predict(http, gw, "on-wide")
        assert down.status_code == 503, down.text
        assert f"encoder wide {wide.url}" in down.json()["detail"]
        assert predict(http, gw, "moved", 2).status_code == 503
        assert predict(http, gw, "on-small").status_code == 200
        assert predict(http, gw, "moved", 1).status_code == 200
        ready = http.get(f"{gw.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert [e["ready"] for e in ready.json()["encoders"]] == [True, False]
        assert ready.json()["not_ready"][0].startswith("wide: ")
        listing = http.get(f"{gw.url}/v1/encoders").json()["encoders"]
        assert listing[1]["ready"] is False and listing[1]["error"]

        # A version nothing registered can serve is refused with every encoder's mismatches, both sides named.
        small.stop()
        small = ServiceProcess("encoder_service", {"ENCODER_MODEL": str(tiny_bert_wide), "ENCODER_THREADS": "1"},
                               port=small.port, log=var / "encoder-small-again.log")
        started(small)  # the small encoder's port now serves the wide model: on-small fits no encoder
        refused = predict(http, gw, "on-small")
        assert refused.status_code == 409, refused.text
        producers = {m["producer"].split(" model ")[0] for m in refused.json()["mismatches"]}
        assert producers == {f"encoder small {small.url}", f"encoder wide {wide.url}"}
        assert all(m["consumer"].endswith("model on-small v1") for m in refused.json()["mismatches"])
    finally:
        for service in (gw, small, wide, classifier):
            service.stop()


@pytest.fixture(scope="module")
def minilm_stack(tmp_path_factory, minilm_path) -> Iterator[dict[str, ServiceProcess]]:
    var = tmp_path_factory.mktemp("minilm-precisions")
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(var / "models")}, log=var / "classifier.log")
    f32 = encoder(minilm_path, var, "f32")
    bf16 = encoder(minilm_path, var, "bf16", ENCODER_PRECISION="bfloat16")
    services = {
        "classifier": classifier, "f32": f32, "bf16": bf16,
        "fitting": gateway(var, "fitting", classifier, {"minilm": f32}),
        "fast": gateway(var, "fast", classifier, {"fast": bf16}),
        "strict": gateway(var, "strict", classifier, {"fast": bf16}, GATEWAY_MIN_AGREEMENT="1.01"),
    }
    with all_running(*services.values()):
        yield services


def test_a_float32_version_is_served_by_a_bfloat16_encoder_accepted_by_measurement(http, minilm_stack):
    s = minilm_stack
    fitted = train(http, s["fitting"], "intents")
    assert fitted.status_code == 201, fitted.text
    assert fitted.json()["input_contract"]["dtype"] == "float32"
    before = predict(http, s["fitting"], "intents").json()

    served = predict(http, s["fast"], "intents")
    assert served.status_code == 200, served.text
    assert [p["label"] for p in served.json()["predictions"]] == [p["label"] for p in before["predictions"]]
    (link,) = http.get(f"{s['fast'].url}/v1/pipelines/intents").json()["chain"]
    assert link["encoder"] == "fast" and link["compatible"] is True
    acceptance = link["acceptance"]
    assert acceptance["accepted"] == "measured" and acceptance["sample_size"] == 64
    assert acceptance["agreement"] >= 0.99 and 0 < acceptance["max_probability_change"] < 0.05

    refused = predict(http, s["strict"], "intents")
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    (measured,) = [m for m in problem["mismatches"] if m["field"] == "measured_agreement"]
    assert measured["expected"] == 1.01 and measured["actual"] >= 0.99
    assert "64-text reference sample" in measured["message"] and "GATEWAY_MIN_AGREEMENT" in measured["message"]
    assert {"dtype"} <= {m["field"] for m in problem["mismatches"]}
    (candidate,) = http.get(f"{s['strict'].url}/v1/pipelines/intents").json()["chain"][0]["encoders"]
    assert candidate["measurement"]["sample_size"] == 64 and candidate["acceptance"] is None


def test_a_version_trained_through_a_bfloat16_encoder_answers_float32s_labels(http, minilm_stack):
    s = minilm_stack
    fitted = train(http, s["fast"], "via-bf16")
    assert fitted.status_code == 201, fitted.text
    assert fitted.json()["input_contract"]["dtype"] == "float32"  # fitted on float32 vectors, asked of the encoder
    texts = sentences(512)
    answers = {}
    for name in ("fast", "fitting"):  # bfloat16 with its near-ties in float32, and float32 throughout
        rows = []
        for i in range(0, len(texts), 256):
            response = http.post(f"{s[name].url}/v1/pipelines/via-bf16/predict", json={"texts": texts[i : i + 256]})
            assert response.status_code == 200, response.text
            rows += response.json()["predictions"]
        answers[name] = rows
    assert [r["label"] for r in answers["fast"]] == [r["label"] for r in answers["fitting"]]
    # float32 within 0.004: within the 0.01 margin under bfloat16, which moves margins by at most 0.004 here.
    near = [i for i, r in enumerate(answers["fitting"]) if (lambda p: p[-1] - p[-2])(sorted(r["probabilities"].values())) < 0.004]
    assert near  # some of the benchmark's texts are near-ties, and those have float32's probabilities
    for i in near:
        a, b = answers["fast"][i]["probabilities"], answers["fitting"][i]["probabilities"]
        assert max(abs(a[c] - b[c]) for c in b) < 1e-4, (texts[i], a, b)
    counted = [line for line in http.get(f"{s['fast'].url}/metrics").text.splitlines()
               if line.startswith("seam_gateway_near_ties_total")]
    assert counted and float(counted[0].split()[-1]) >= len(near)


def test_a_version_without_a_reference_sample_gets_exact_matching_only(http, minilm_stack):
    s = minilm_stack
    kept_none = train(http, s["fitting"], "private", retain_texts=False)
    assert kept_none.status_code == 201 and kept_none.json()["retained"] is None
    assert predict(http, s["fitting"], "private").status_code == 200  # exact on its own encoder
    refused = predict(http, s["fast"], "private")
    assert refused.status_code == 409, refused.text
    fields = {m["field"] for m in refused.json()["mismatches"]}
    assert fields == {"dtype", "reference_sample"}
    assert "retain_texts" in refused.json()["detail"]
    # The classifier says so too, behind its internal routes.
    gone = http.get(f"{s['classifier'].url}/v1/models/private/versions/1/reference")
    assert gone.status_code == 404 and gone.json()["type"].endswith("/no-retained-data")
