"""Upstream faults: every one leaves as problem+json naming the upstream and the stage, never a 500."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from services.codecs import BINARY_CONTENT_TYPE, decode_binary, encode_binary
from tests.gateway.fakes import CLASSIFIER_URL, ENCODER_URL, problem
from tests.support import assert_problem

TEXTS = ["where is my parcel", "charged twice", "reset my password", "refund please"]
LABELS = ["shipping", "billing", "account", "billing"]


@pytest.fixture
async def trained(client):
    body = {"texts": TEXTS, "labels": LABELS, "estimator": "logistic_regression", "feature": "embedding"}
    assert (await client.post("/v1/pipelines/intents/train", json=body)).status_code == 201
    return "intents"


async def predict(client, texts=("hello", "parcel lost")) -> httpx.Response:
    return await client.post("/v1/pipelines/intents/predict", json={"texts": list(texts)})


def refuse_connection(request: httpx.Request):
    raise httpx.ConnectError("All connection attempts failed", request=request)


def only(route: str, answer):
    def fault(request: httpx.Request):
        if f"{request.method} {request.url.path}" == route:
            return answer(request)
        return None

    return fault


def encoded_frame(fake_encoder, texts, tensor=None, contract_id=None, output="embedding", content_type=BINARY_CONTENT_TYPE):
    tensor = fake_encoder.features(texts, output) if tensor is None else tensor
    cid = contract_id or fake_encoder.ids[output]
    meta = {"model": fake_encoder.model, "output": output, "contract_id": cid, "truncated": [False] * len(texts)}
    return httpx.Response(200, content=encode_binary(tensor, meta), headers={"content-type": content_type, "X-Seam-Contract": cid})


# --- unreachable, recovering -----------------------------------------------------------------------------


async def test_encoder_unreachable_is_503_naming_it_and_recovers(client, trained, fake_encoder):
    fake_encoder.fault = refuse_connection
    body = assert_problem(await predict(client), 503, f"encoder {ENCODER_URL}", "unreachable")
    assert body["type"].endswith("/upstream-unavailable") and body["stage"] == "encode embedding"
    fake_encoder.fault = None
    assert (await predict(client)).status_code == 200


async def test_classifier_unreachable_is_503_naming_it_and_recovers(client, trained, fake_classifier):
    fake_classifier.fault = refuse_connection
    assert_problem(await predict(client), 503, f"classifier {CLASSIFIER_URL}", "predict intents v1")
    fake_classifier.fault = None
    assert (await predict(client)).status_code == 200


async def test_unknown_pipeline_with_classifier_down_is_503_not_404(client, fake_classifier):
    fake_classifier.fault = refuse_connection
    assert_problem(await predict(client), 503, f"classifier {CLASSIFIER_URL}")


async def test_encoder_not_ready_is_503(client, trained, fake_encoder):
    fake_encoder.fault = lambda r: problem(503, "the model is still loading; retry shortly", "not-ready")
    assert_problem(await predict(client), 503, f"encoder {ENCODER_URL} is not ready", "still loading")


async def test_a_slow_upstream_is_504_after_the_timeout(client, trained, fake_encoder, settings):
    fake_encoder.delay = settings.timeout_s + 1
    body = assert_problem(await predict(client), 504, f"encoder {ENCODER_URL}", "did not answer within 1s")
    assert body["type"].endswith("/upstream-timeout")


async def test_an_httpx_timeout_is_504(client, trained, fake_classifier):
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    fake_classifier.fault = only("POST /v1/models/intents/predict", slow)
    assert_problem(await predict(client), 504, f"classifier {CLASSIFIER_URL}")


async def test_a_stale_pooled_connection_is_retried_once(client, trained, fake_encoder):
    failures = []

    def drop_once(request):
        if not failures:
            failures.append(request)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return None

    fake_encoder.fault = drop_once
    assert (await predict(client)).status_code == 200
    assert len(failures) == 1


# --- bad answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensor, reason",
    [
        (np.full((2, 8), np.nan, np.float32), "NaN"),
        (np.zeros((3, 8), np.float32), "3 rows for 2 texts"),
        (np.zeros((2, 5), np.float32), "5-wide vectors where its contract says 8"),
    ],
)
async def test_a_bad_encoder_answer_is_502_naming_the_stage(client, trained, fake_encoder, tensor, reason):
    fake_encoder.fault = only("POST /v1/encode", lambda r: encoded_frame(fake_encoder, ["x", "y"], tensor))
    body = assert_problem(await predict(client), 502, f"encoder {ENCODER_URL}", "encode embedding", reason)
    assert body["type"].endswith("/bad-upstream-response")


async def test_an_encoder_answer_that_is_no_frame_is_502(client, trained, fake_encoder):
    fake_encoder.fault = only("POST /v1/encode", lambda r: httpx.Response(200, json={"data": [[0.0] * 8] * 2}))
    assert_problem(await predict(client), 502, "expected a application/vnd.seam.tensor frame")
    fake_encoder.fault = only(
        "POST /v1/encode", lambda r: httpx.Response(200, content=b"SEAM\xff", headers={"content-type": BINARY_CONTENT_TYPE})
    )
    assert_problem(await predict(client), 502, "undecodable tensor frame")


async def test_an_encoder_answer_without_a_contract_id_is_502(client, trained, fake_encoder):
    def anonymous(request):
        tensor = fake_encoder.features(["x", "y"], "embedding")
        return httpx.Response(200, content=encode_binary(tensor, {}), headers={"content-type": BINARY_CONTENT_TYPE})

    fake_encoder.fault = only("POST /v1/encode", anonymous)
    assert_problem(await predict(client), 502, "X-Seam-Contract")


async def test_a_bad_outputs_answer_is_502(client, fake_encoder, runtime):
    fake_encoder.fault = only("GET /v1/outputs", lambda r: httpx.Response(200, json={"model": "m", "outputs": {"x": 1}}))
    response = await client.get("/v1/pipelines")
    assert_problem(response, 502, f"encoder {ENCODER_URL} gave a bad answer at outputs")


def classifier_frame(probabilities, meta):
    return httpx.Response(200, content=encode_binary(np.asarray(probabilities, np.float32), meta),
                          headers={"content-type": BINARY_CONTENT_TYPE})


@pytest.mark.parametrize(
    "probabilities, meta, reason",
    [
        ([[0.9, 0.9, 0.9]] * 2, None, "not probability distributions"),
        ([[np.inf, 0, 0]] * 2, None, "NaN or infinity"),
        ([[1.0, 0, 0]], None, "1 rows for 2 texts"),
        ([[1.0, 0, 0]] * 2, {"classes": ["b", "a", "c"]}, "classes"),
        ([[1.0, 0, 0]] * 2, {"labels": ["nope", "nope"]}, "unknown predicted labels"),
    ],
)
async def test_a_bad_classifier_answer_is_502_naming_the_stage(client, trained, fake_classifier, probabilities, meta, reason):
    good = {"name": "intents", "version": 1, "classes": ["account", "billing", "shipping"], "labels": ["account"] * 2}
    fake_classifier.fault = only(
        "POST /v1/models/intents/predict", lambda r: classifier_frame(probabilities, {**good, **(meta or {})})
    )
    assert_problem(await predict(client), 502, f"classifier {CLASSIFIER_URL}", "predict intents v1", reason)


async def test_an_upstream_500_is_502(client, trained, fake_classifier):
    fake_classifier.fault = only("POST /v1/models/intents/predict", lambda r: problem(500, "boom", "internal"))
    assert_problem(await predict(client), 502, "failed at predict intents v1 with 500: boom")


# --- refusals passed on ----------------------------------------------------------------------------------


async def test_an_upstream_4xx_passes_through_with_its_status_type_and_detail(client):
    body = {"texts": TEXTS, "labels": LABELS, "estimator": "random_forest", "feature": "embedding"}
    response = await client.post("/v1/pipelines/intents/train", json=body)
    problem_body = assert_problem(response, 422, "unknown estimator random_forest")
    assert problem_body["type"] == "https://seam.dev/problems/incompatible-estimator"
    assert problem_body["upstream"] == f"classifier {CLASSIFIER_URL}"
    assert problem_body["stage"] == "fit intents"


async def test_refused_credentials_are_a_gateway_fault_not_the_callers(client, trained, fake_classifier):
    fake_classifier.fault = lambda r: problem(401, "missing X-Seam-Internal-Token", "unauthorized")
    assert_problem(await predict(client), 502, "refused the gateway's credentials", "GATEWAY_INTERNAL_TOKEN")


async def test_an_overloaded_upstream_is_429_with_retry_after(client, trained, fake_encoder):
    def busy(request):
        response = problem(429, "queue full", "overloaded")
        response.headers["Retry-After"] = "3"
        return response

    fake_encoder.fault = only("POST /v1/encode", busy)
    response = await predict(client)
    assert_problem(response, 429, "queue full")
    assert response.headers["retry-after"] == "3"


async def test_the_internal_token_is_sent_upstream(gateway_with, fake_encoder):
    seen = []
    fake_encoder.fault = lambda r: seen.append(r.headers.get("x-seam-internal-token"))
    async with gateway_with(internal_token="s3cret"):
        pass
    assert seen == ["s3cret"]  # the contracts read at start


# --- the fit frame ---------------------------------------------------------------------------------------


async def test_fit_sends_one_binary_frame_with_the_other_fields_in_meta(client, fake_classifier):
    frames = []

    def capture(request):
        if request.url.path.endswith("/fit"):
            assert request.headers["content-type"] == BINARY_CONTENT_TYPE
            frames.append(decode_binary(request.content))

    fake_classifier.fault = capture
    body = {"texts": TEXTS, "labels": LABELS, "estimator": "logistic_regression", "feature": "embedding",
            "params": {"C": 0.5}}
    assert (await client.post("/v1/pipelines/intents/train", json=body)).status_code == 201
    (frame,) = frames
    assert frame.tensor.shape == (4, 8)
    # The texts travel with the fit, to be kept with the version (train with retain_texts false: they do not).
    assert set(frame.meta) == {"labels", "contract", "estimator", "params", "source", "texts", "reference_sample"}
    assert frame.meta["texts"] == TEXTS and frame.meta["reference_sample"] == 64
    assert frame.meta["labels"] == LABELS and frame.meta["params"] == {"C": 0.5}
    assert json.loads(json.dumps(frame.meta["source"])) == {"type": "encoder", "output": "embedding"}


# --- readiness -------------------------------------------------------------------------------------------


async def test_readyz_reports_both_upstreams(client, fake_encoder):
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["encoder"]["url"] == ENCODER_URL and body["encoder"]["model"] == "fake-encoder"
    assert body["encoder"]["outputs"] == fake_encoder.ids
    assert body["classifier"] == {"url": CLASSIFIER_URL}
    assert (await client.get("/healthz")).json() == {"status": "alive"}


async def test_readyz_is_503_naming_the_failing_upstream(client, fake_encoder, fake_classifier):
    fake_encoder.fault = refuse_connection
    body = assert_problem(await client.get("/readyz"), 503, f"encoder {ENCODER_URL}")
    assert body["upstreams"]["classifier"] == "ready"
    fake_encoder.fault = None
    fake_classifier.fault = lambda r: problem(503, "store not mounted", "not-ready")
    body = assert_problem(await client.get("/readyz"), 503, f"classifier {CLASSIFIER_URL}", "store not mounted")
    assert body["upstreams"]["encoder"] == "ready"
    fake_classifier.fault = None
    assert (await client.get("/readyz")).status_code == 200


async def test_the_gateway_starts_with_its_upstreams_down(gateway_with, fake_encoder, fake_classifier):
    fake_encoder.fault = fake_classifier.fault = refuse_connection
    async with gateway_with() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        fake_encoder.fault = fake_classifier.fault = None
        assert (await client.get("/readyz")).status_code == 200


async def test_fits_have_their_own_longer_timeout(gateway_with, fake_classifier):
    body = {"texts": TEXTS, "labels": LABELS}
    async with gateway_with(timeout_s=0.2, fit_timeout_s=5.0) as client:
        fake_classifier.delay = 0.5  # slower than timeout_s, well within fit_timeout_s
        assert (await client.post("/v1/pipelines/intents/train", json=body)).status_code == 201
        response = await predict(client)
        assert_problem(response, 504, "within 0.2s", "GATEWAY_TIMEOUT_S")
