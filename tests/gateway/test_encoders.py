"""Several encoders behind one gateway, in-process against fakes: settings, routing, measured acceptance."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from tests.gateway.fakes import CLASSIFIER_URL, FakeEncoder, train
from tests.support import gateway_app, serve

A_URL, B_URL = "http://a.test:8001", "http://b.test:8003"


@pytest.fixture
def encoder_b() -> FakeEncoder:
    return FakeEncoder(model="wide-encoder", dim=12)


@pytest.fixture
async def gw(fake_encoder, encoder_b, fake_classifier):
    settings = GatewaySettings(
        encoders=f"a={A_URL},b={B_URL}", classifier_url=CLASSIFIER_URL, timeout_s=1.0, pipeline_ttl_s=3600,
        train_chunk_size=4, recheck_interval_s=0.0, reference_sample=8,
    )
    app = gateway_app(settings, classifier=fake_classifier, encoders={"a": fake_encoder, "b": encoder_b})
    async with serve(app, "http://gw") as client:
        yield client


@pytest.fixture
def app(gw):
    return gw.app


async def predict(gw, name: str, **params) -> httpx.Response:
    return await gw.post(f"/v1/pipelines/{name}/predict", json={"texts": ["hello", "where is my parcel"]}, params=params)


async def link(gw, name: str) -> dict:
    return (await gw.get(f"/v1/pipelines/{name}")).json()["chain"][0]


# --- settings --------------------------------------------------------------------------------------------


def test_encoders_setting_is_named_urls_in_order():
    settings = GatewaySettings(encoders="minilm=http://127.0.0.1:8001/, mpnet=https://e.test")
    assert settings.encoder_urls() == {"minilm": "http://127.0.0.1:8001", "mpnet": "https://e.test"}
    assert GatewaySettings(encoder_url="http://x.test:1").encoder_urls() == {"default": "http://x.test:1"}


@pytest.mark.parametrize("value, why", [
    ("minilm", "not name=url"), ("Big=http://x", "does not match"), ("a=ftp://x", "http"),
    ("a=http://x,a=http://y", "listed twice"),
])
def test_bad_encoders_settings_are_refused_at_start(value, why):
    with pytest.raises(ValidationError, match=why):
        GatewaySettings(encoders=value)


# --- registry, training, routing ------------------------------------------------------------------------


async def test_encoders_are_listed_with_their_outputs(gw, fake_encoder, encoder_b):
    listing = (await gw.get("/v1/encoders")).json()["encoders"]
    assert [(e["name"], e["url"], e["ready"], e["model"]) for e in listing] == [
        ("a", A_URL, True, "fake-encoder"), ("b", B_URL, True, "wide-encoder")]
    assert listing[0]["outputs"]["embedding"] == {"id": fake_encoder.ids["embedding"], "kind": "embedding", "dim": 8,
                                                  "dtype": "float32"}
    assert listing[1]["outputs"]["tokens"]["id"] == encoder_b.ids["tokens"]


async def test_train_through_a_named_encoder_records_it_and_each_pipeline_is_served_by_its_own(gw, fake_classifier):
    first = await train(gw, "on-a")
    assert first.json()["source"] == {"type": "encoder", "output": "embedding", "encoder": "a"}
    second = await train(gw, "on-b", encoder="b")
    assert second.json()["source"]["encoder"] == "b" and second.json()["input_contract"]["dim"] == 12
    for name, encoder in (("on-a", "a"), ("on-b", "b")):
        assert (await predict(gw, name)).status_code == 200
        found = await link(gw, name)
        assert found["encoder"] == encoder and found["acceptance"] == {"accepted": "exact"}
    widths = [tensor.shape[1] for _, _, tensor in fake_classifier.predicted[-4:]]
    assert 8 in widths and 12 in widths


async def test_an_unknown_encoder_is_refused_listing_the_registered_ones(gw):
    response = await train(gw, "x", encoder="mpnet")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/unknown-encoder") and response.json()["encoders"] == ["a", "b"]


async def test_a_version_moves_to_another_encoder_that_fits_exactly_when_its_own_no_longer_does(gw, fake_encoder, encoder_b):
    encoder_b.serve("fake-encoder", dim=8)  # b now serves a's space too
    await gw.get("/readyz")
    assert (await train(gw, "intents", encoder="b")).status_code == 201
    assert (await link(gw, "intents"))["encoder"] == "b"  # its own first, though a fits as well
    encoder_b.serve("other-encoder", dim=8)
    assert (await predict(gw, "intents")).status_code == 200
    assert (await link(gw, "intents"))["encoder"] == "a"


async def test_no_encoder_fits_lists_every_encoders_mismatches(gw, fake_encoder):
    assert (await train(gw, "intents")).status_code == 201
    fake_encoder.serve("other-encoder", dim=8)
    response = await predict(gw, "intents")
    assert response.status_code == 409
    producers = {m["producer"] for m in response.json()["mismatches"]}
    assert producers == {f"encoder a {A_URL} model other-encoder output embedding",
                         f"encoder b {B_URL} model wide-encoder output embedding"}
    report = await link(gw, "intents")
    assert report["acceptance"] is None and [c["encoder"] for c in report["encoders"]] == ["a", "b"]


async def test_the_route_is_decided_once_not_per_request(app, gw):
    await train(gw, "intents")
    runtime = app.state.runtime
    for _ in range(3):
        assert (await predict(gw, "intents")).status_code == 200
    decided = runtime.router.routes_decided
    for _ in range(3):
        assert (await predict(gw, "intents")).status_code == 200
    assert runtime.router.routes_decided == decided


async def test_an_encoder_down_is_503_for_its_pipelines_only(gw, fake_encoder):
    await train(gw, "on-a")
    await train(gw, "on-b", encoder="b")

    def refuse(request):
        raise httpx.ConnectError("refused")

    fake_encoder.fault = refuse
    down = await predict(gw, "on-a")
    assert down.status_code == 503 and f"encoder a {A_URL}" in down.json()["detail"]
    assert (await predict(gw, "on-b")).status_code == 200
    ready = await gw.get("/readyz")
    assert ready.status_code == 200 and ready.json()["not_ready"][0].startswith("a: ")


# --- measured acceptance ---------------------------------------------------------------------------------


async def test_the_same_space_in_another_dtype_is_accepted_by_measurement_once(app, gw, fake_encoder, fake_classifier):
    assert (await train(gw, "intents")).json()["retained"] == {"texts": 10, "reference_sample": 8}
    fake_encoder.serve("fake-encoder", dim=8, dtype="bfloat16")
    for _ in range(3):
        assert (await predict(gw, "intents")).status_code == 200
    found = await link(gw, "intents")
    assert found["acceptance"] == {"accepted": "measured", "agreement": 1.0, "max_probability_change": 0.0,
                                   "sample_size": 8}
    assert app.state.runtime.meter.measurements_run == 1


async def test_a_measurement_below_the_agreement_asked_for_is_refused_with_it(gw, fake_encoder, fake_classifier):
    await train(gw, "intents")
    fake_encoder.serve("fake-encoder", dim=8, dtype="bfloat16")
    fake_classifier.shift = 1  # every label moves: the version disagrees with itself at fit time
    response = await predict(gw, "intents")
    assert response.status_code == 409, response.text
    (measured,) = [m for m in response.json()["mismatches"] if m["field"] == "measured_agreement"]
    assert measured["actual"] == 0.0 and measured["expected"] == 0.99
    assert "8-text reference sample" in measured["message"]
    candidate = (await link(gw, "intents"))["encoders"][0]
    assert candidate["measurement"]["sample_size"] == 8 and candidate["measurement"]["max_probability_change"] > 0.3


async def test_a_version_that_kept_no_texts_gets_exact_matching_only(gw, fake_encoder, fake_classifier):
    response = await train(gw, "private", retain_texts=False)
    assert response.json()["retained"] is None and fake_classifier.references == {}
    fake_encoder.serve("fake-encoder", dim=8, dtype="bfloat16")
    refused = await predict(gw, "private")
    assert refused.status_code == 409
    assert {m["field"] for m in refused.json()["mismatches"]} >= {"dtype", "reference_sample"}
    assert "retain_texts" in refused.json()["detail"]


async def test_another_space_is_never_measured(app, gw, fake_encoder):
    await train(gw, "intents")
    fake_encoder.serve("fine-tuned", dim=8, dtype="bfloat16")
    assert (await predict(gw, "intents")).status_code == 409
    assert app.state.runtime.meter.measurements_run == 0


async def test_seam_encoders_prints_a_table_from_the_gateways_listing(gw, monkeypatch, capsys):
    from seam import cli
    from seam.client import Gateway

    listing = (await gw.get("/v1/encoders")).json()
    listing["encoders"][1].update(ready=False, error="encoder b is unreachable")
    monkeypatch.setattr(Gateway, "encoders", lambda self: listing["encoders"])  # seam.client answers the CLI
    assert cli.main(["--gateway", "http://gw.test", "encoders"]) == 1  # one is not ready
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["encoder", "url", "ready", "model", "output", "dim", "dtype", "contract"]
    assert any(line.split()[:7] == ["a", A_URL, "yes", "fake-encoder", "embedding", "8", "float32"] for line in out)
    assert any(line.split()[:3] == ["b", B_URL, "NO"] for line in out)
    assert out[-1] == "b is not ready: encoder b is unreachable"


# --- bfloat16: fitted on float32, near-ties decided in float32 ---------------------------------------------


def _rule(*answers: list[list[float]]):
    """The classifier's probabilities for its next predicts, one array per call."""
    queue = iter(np.array(a, np.float32) for a in answers)
    return lambda rows, k: next(queue)


async def _fitted_on_float32_and_served_in_bfloat16(gw, fake_encoder, fake_classifier, measured_rule=None) -> None:
    fake_encoder.serve("fake-encoder", dim=8, dtype="bfloat16", float32=True)
    fitted = await train(gw, "intents")
    assert fitted.status_code == 201, fitted.text
    assert fitted.json()["input_contract"]["dtype"] == "float32"  # the training set was asked in float32
    assert sum(map(len, fake_encoder.asked_float32)) == 10
    fake_classifier.rule = measured_rule or fake_classifier.rule  # what the measurement finds
    assert (await gw.post("/v1/pipelines/intents/predict", json={"texts": ["x"] * 8})).status_code == 200
    assert (await link(gw, "intents"))["acceptance"]["accepted"] == "measured"
    fake_encoder.asked_float32.clear()


async def test_near_ties_from_a_bfloat16_encoder_are_decided_again_in_float32(gw, fake_encoder, fake_classifier):
    await _fitted_on_float32_and_served_in_bfloat16(gw, fake_encoder, fake_classifier)
    texts = ["one", "two", "three"]
    # bfloat16: the first and the third are near-ties (within GATEWAY_NEAR_TIE_MARGIN, 0.01); float32 decides them.
    fake_classifier.rule = _rule([[0.502, 0.498, 0.0], [0.9, 0.1, 0.0], [0.0, 0.497, 0.503]],
                                 [[0.2, 0.8, 0.0], [0.0, 0.6, 0.4]])
    answer = await gw.post("/v1/pipelines/intents/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    classes = ["account", "billing", "shipping"]
    assert [p["label"] for p in answer.json()["predictions"]] == ["billing", "account", "billing"]
    assert [p["probabilities"][classes[1]] for p in answer.json()["predictions"]] == pytest.approx([0.8, 0.1, 0.6])
    assert fake_encoder.asked_float32 == [["one", "three"]]
    metrics = (await gw.get("/metrics")).text
    assert "seam_gateway_near_ties_total 2.0" in metrics


async def test_near_ties_stay_as_served_when_the_margin_is_zero_or_the_encoder_offers_no_float32(
        gw, fake_encoder, fake_classifier):
    await _fitted_on_float32_and_served_in_bfloat16(gw, fake_encoder, fake_classifier)
    gw.app.state.runtime.settings = gw.app.state.runtime.settings.model_copy(update={"near_tie_margin": 0.0})
    fake_classifier.rule = _rule([[0.502, 0.498, 0.0]])
    answer = await gw.post("/v1/pipelines/intents/predict", json={"texts": ["one"]})
    assert answer.json()["predictions"][0]["label"] == "account" and fake_encoder.asked_float32 == []
    gw.app.state.runtime.settings = gw.app.state.runtime.settings.model_copy(update={"near_tie_margin": 0.01})
    fake_encoder.serve("fake-encoder", dim=8, dtype="bfloat16")  # restarted: no float32 on request now
    await gw.app.state.runtime.encoders.refresh_all()
    fake_classifier.rule = _rule([[0.502, 0.498, 0.0]])  # the served contract is the same: measured already
    answer = await gw.post("/v1/pipelines/intents/predict", json={"texts": ["one"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] == "account" and fake_encoder.asked_float32 == []


async def test_a_float32_answer_under_a_contract_the_encoder_does_not_list_is_refused(gw, fake_encoder, fake_classifier):
    await _fitted_on_float32_and_served_in_bfloat16(gw, fake_encoder, fake_classifier)
    fake_encoder.float32_ids = {name: "0" * 64 for name in fake_encoder.float32_ids}  # changed behind the gateway's back
    fake_classifier.rule = _rule([[0.502, 0.498, 0.0]])
    answer = await gw.post("/v1/pipelines/intents/predict", json={"texts": ["one"]})
    assert answer.status_code == 503, answer.text
    assert "in float32 under contract 000000000000" in answer.json()["detail"] and "retry" in answer.json()["detail"]


async def test_a_version_that_bfloat16_moves_further_gets_a_wider_margin(gw, fake_encoder, fake_classifier):
    # The measurement finds the same labels (row i: class i mod 3), their probability 0.08 below its fit-time
    # value (0.7): the margin is 0.32.
    moved = np.full((8, 3), 0.19, np.float32)
    moved[np.arange(8), np.arange(8) % 3] = 0.62
    await _fitted_on_float32_and_served_in_bfloat16(gw, fake_encoder, fake_classifier, measured_rule=lambda rows, k: moved)
    measurement = (await link(gw, "intents"))["acceptance"]
    assert measurement["accepted"] == "measured" and measurement["max_probability_change"] == pytest.approx(0.08, abs=1e-6)
    fake_classifier.rule = _rule([[0.6, 0.35, 0.05], [0.8, 0.1, 0.1]], [[0.3, 0.65, 0.05]])
    answer = await gw.post("/v1/pipelines/intents/predict", json={"texts": ["one", "two"]})
    assert [p["label"] for p in answer.json()["predictions"]] == ["billing", "account"]
    assert fake_encoder.asked_float32 == [["one"]]  # 0.25 apart: within 0.32; 0.7 apart: not
