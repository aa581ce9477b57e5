"""Bad input, across the three services: every row is a 4xx problem+json whose detail names the
problem, never a 5xx, and the service answers a good request right after.

The apps run in process with real models (a tiny BERT behind the encoder, real estimators in the
classifier) and small limits, so the "huge" cases stay small."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from services.codecs import BINARY_CONTENT_TYPE, encode_binary
from tests.classifier_service.synthetic import DIM, features_for, fit_body, tensor_json
from tests.support import LABELS, TEXTS, world

LIMITS = {
    "encoder": {"max_texts": 8, "max_chars": 200, "max_body_bytes": 64_000, "max_json_values": 32 * 40},
    "classifier": {"max_fit_rows": 100, "max_predict_rows": 16, "max_body_bytes": 400_000},
    "gateway": {"max_texts": 8, "max_train_texts": 64, "max_body_bytes": 64_000, "train_chunk_size": 8,
                "max_chain_depth": 1},
}
FEATURES, FEATURE_LABELS, CONTRACT = features_for("embedding")


def fit_json(**change: Any) -> dict[str, Any]:
    return {**fit_body(FEATURES, FEATURE_LABELS, CONTRACT), **change}


def train_json(**change: Any) -> dict[str, Any]:
    return {"texts": TEXTS, "labels": LABELS, "estimator": "logistic_regression", "feature": "embedding", **change}


def raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


def js(body: Any) -> dict[str, Any]:
    return {"json": body}


@dataclass(frozen=True)
class Case:
    id: str
    service: str
    path: str
    request: dict[str, Any]
    status: int
    says: str
    method: str = "POST"
    extra: dict[str, Any] = field(default_factory=dict)


ENCODE, FIT, PREDICT = "/v1/encode", "/v1/models/m/fit", "/v1/models/m/predict"
G_TRAIN, G_PREDICT = "/v1/pipelines/intents/train", "/v1/pipelines/intents/predict"
G_EVALUATE = "/v1/pipelines/intents/evaluate"
NAN_ROW = "[" + ",".join(["NaN"] + ["1.0"] * (DIM - 1)) + "]"
EXTREME = [[1e38] * (DIM // 2) + [-1e38] * (DIM // 2)]  # finite, but a linear model's sums overflow
BINARY_BOTH = {"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE}
DEEP_SOURCE = json.dumps(fit_json(source="@")).replace('"@"', '{"a": ' * 900 + "1" + "}" * 900).encode()
# Within the body's depth limit (64) but deeper than a recorded field may nest (CLASSIFIER_MAX_SOURCE_DEPTH, 16).
NESTED_SOURCE = json.dumps(fit_json(source="@")).replace('"@"', '{"a": ' * 40 + "1" + "}" * 40).encode()
BAD_UTF8 = b'{"texts": ["caf\xe9 \xff"]}'

CASES = [
    # -- encoder ---------------------------------------------------------------------------------
    Case("enc-malformed-json", "encoder", ENCODE, raw(b'{"texts": ['), 400, "not valid JSON"),
    Case("enc-invalid-utf8", "encoder", ENCODE, raw(BAD_UTF8), 400, "not valid UTF-8"),
    Case("enc-text-plain", "encoder", ENCODE, raw(b"hello", "text/plain"), 415, "text/plain"),
    Case("enc-form", "encoder", ENCODE, raw(b"texts=hi", "application/x-www-form-urlencoded"), 415, "x-www-form-urlencoded"),
    Case("enc-body-not-object", "encoder", ENCODE, js(["hello"]), 422, "valid dictionary"),
    Case("enc-texts-not-list", "encoder", ENCODE, js({"texts": "hello"}), 422, "texts: Input should be a valid list"),
    Case("enc-text-wrong-type", "encoder", ENCODE, js({"texts": ["ok", 3]}), 422, "texts.1"),
    Case("enc-text-none", "encoder", ENCODE, js({"texts": [None]}), 422, "texts.0"),
    Case("enc-empty-list", "encoder", ENCODE, js({"texts": []}), 422, "at least 1 item"),
    Case("enc-huge-list", "encoder", ENCODE, js({"texts": ["hi"] * 9}), 413, "the limit is 8 (ENCODER_MAX_TEXTS)"),
    Case("enc-empty-string", "encoder", ENCODE, js({"texts": ["ok", "  "]}), 422, "texts[1] is empty"),
    Case("enc-huge-string", "encoder", ENCODE, js({"texts": ["x" * 201]}), 413, "201 characters"),
    Case("enc-lone-surrogate", "encoder", ENCODE, raw(b'{"texts": ["a \\ud800 b"]}'), 422, "lone surrogate"),
    Case("enc-unknown-output", "encoder", ENCODE, js({"texts": ["ok"], "output": "logits"}), 422, "output"),
    Case("enc-no-head", "encoder", ENCODE, js({"texts": ["ok"], "output": "probabilities"}), 422,
         "no sequence-classification head"),
    Case("enc-unknown-field", "encoder", ENCODE, js({"texts": ["ok"], "colour": "blue"}), 422, "colour"),
    Case("enc-body-too-large", "encoder", ENCODE, js({"texts": ["x" * 70_000]}), 413, "exceeds 64000 bytes"),
    # -- classifier ------------------------------------------------------------------------------
    Case("clf-malformed-json", "classifier", FIT, raw(b"{not json"), 400, "not valid JSON"),
    Case("clf-invalid-utf8", "classifier", FIT, raw(b'{"labels": ["\xff"]}'), 400, "utf-8"),
    Case("clf-text-csv", "classifier", FIT, raw(b"a,b", "text/csv"), 415, "text/csv"),
    Case("clf-bad-frame", "classifier", FIT, raw(b"SEAM\x00", BINARY_CONTENT_TYPE), 400, "not a valid tensor frame"),
    Case("clf-features-not-list", "classifier", FIT, js(fit_json(features="x")), 422, "features"),
    Case("clf-labels-wrong-type", "classifier", FIT, js(fit_json(labels=[1] * len(FEATURE_LABELS))), 422, "labels.0"),
    Case("clf-one-class", "classifier", FIT, js(fit_json(labels=["billing"] * len(FEATURE_LABELS))), 422,
         "at least two classes"),
    Case("clf-labels-length", "classifier", FIT, js(fit_json(labels=FEATURE_LABELS[:-1])), 422,
         f"{len(FEATURE_LABELS) - 1} labels for {len(FEATURE_LABELS)} rows"),
    Case("clf-empty-features", "classifier", FIT, js(fit_json(features=[], labels=[])), 422, "non-empty list of rows"),
    Case("clf-huge-fit", "classifier", FIT,
         js(fit_json(features=tensor_json(np.ones((101, DIM), np.float32)), labels=["a", "b"] * 50 + ["a"])), 413,
         "at most 100 per fit"),
    Case("clf-fit-nan", "classifier", FIT,
         raw(json.dumps(fit_json(features=[[float("nan")] * DIM] + tensor_json(FEATURES[1:]))).encode()), 422,
         "NaN or infinity in row 0"),
    Case("clf-fit-wrong-dim", "classifier", FIT,
         js(fit_json(contract={**CONTRACT.model_dump(), "dim": DIM + 1})), 422, f"dim: expected {DIM + 1}, got {DIM}"),
    Case("clf-unknown-estimator", "classifier", FIT, js(fit_json(estimator="random_forest")), 422, "random_forest"),
    Case("clf-unknown-param", "classifier", FIT, js(fit_json(params={"learning_rat": 0.1})), 422,
         "does not take the parameter(s) learning_rat"),
    Case("clf-bad-param-value", "classifier", FIT, js(fit_json(params={"C": -1})), 422, "'C'"),
    Case("clf-label-surrogate", "classifier", FIT, raw(json.dumps(fit_json()).replace('"billing"', '"\\udc00"', 1).encode()),
         422, "lone surrogate"),
    Case("clf-source-surrogate", "classifier", FIT, raw(json.dumps(fit_json(source={"note": "\ud800"})).encode()), 422,
         "lone surrogate"),
    Case("clf-path-like-name", "classifier", "/v1/models/..%2Fx/fit", js(fit_json()), 404, "Not Found"),
    Case("clf-bad-name", "classifier", "/v1/models/Bad%20Name/fit", js(fit_json()), 422, "name: String should match pattern"),
    Case("clf-unknown-model", "classifier", "/v1/models/nobody/predict", js({"features": tensor_json(FEATURES[:4])}), 404,
         "No model named 'nobody'"),
    Case("clf-unknown-version", "classifier", PREDICT + "?version=9", js({"features": tensor_json(FEATURES[:4])}), 404,
         "has no version 9"),
    Case("clf-wrong-dim", "classifier", PREDICT, js({"features": tensor_json(FEATURES[:4, :4])}), 422, "expected 8, got 4"),
    Case("clf-ragged-rows", "classifier", PREDICT, js({"features": [[1.0] * DIM, [1.0] * (DIM - 1)]}), 422, "shape"),
    Case("clf-sequences-for-vectors", "classifier", PREDICT, js({"features": [[[1.0] * DIM]]}), 422, "kind"),
    Case("clf-none-feature", "classifier", PREDICT, js({"features": [[None] * DIM]}), 422, "values must be JSON numbers"),
    Case("clf-nan-feature", "classifier", PREDICT, raw(('{"features": [' + NAN_ROW + "]}").encode()), 422,
         "NaN or infinity in row 0"),
    Case("clf-inf-feature", "classifier", PREDICT, raw(b'{"features": [[1e400' + b", 1.0" * (DIM - 1) + b"]]}"), 422,
         "NaN or infinity"),
    Case("clf-huge-predict", "classifier", PREDICT, js({"features": tensor_json(np.ones((17, DIM), np.float32))}), 413,
         "at most 16 per request"),
    Case("clf-unknown-route", "classifier", "/v1/models/m/explain", js({}), 404, "Not Found"),
    # issue 15: nothing non-finite answered, strict and bounded parameters, cheap checks first
    Case("clf-extreme-features", "classifier", PREDICT, js({"features": EXTREME}), 422, "row 0 cannot be classified"),
    Case("clf-extreme-features-binary", "classifier", PREDICT,
         {"content": encode_binary(np.array(EXTREME, np.float32), {}), "headers": BINARY_BOTH}, 422,
         "row 0 cannot be classified"),
    Case("clf-extreme-features-v2", "classifier", "/v2/models/m/infer",
         js({"inputs": [{"name": "FEATURES", "shape": [1, DIM], "datatype": "FP32", "data": EXTREME}]}), 422,
         "row 0 cannot be classified"),
    Case("clf-degenerate-fit", "classifier", FIT,
         js(fit_json(features=[[1.0] * DIM] * len(FEATURE_LABELS), estimator="gaussian_nb")), 422,
         "variance is zero"),
    Case("clf-hidden-layers-huge", "classifier", FIT, js(fit_json(estimator="mlp", params={"hidden_layer_sizes": [10**7]})),
         422, "CLASSIFIER_MAX_MODEL_PARAMETERS"),
    Case("clf-hidden-layers-object", "classifier", FIT, js(fit_json(estimator="mlp", params={"hidden_layer_sizes": {"a": 1}})),
         422, "hidden_layer_sizes must be a non-empty list of layer widths"),
    Case("clf-hidden-layers-float", "classifier", FIT, js(fit_json(estimator="mlp", params={"hidden_layer_sizes": [1.5]})),
         422, "hidden_layer_sizes must be a non-empty list of layer widths"),
    Case("clf-max-iter-bool", "classifier", FIT, js(fit_json(estimator="mlp", params={"max_iter": True})), 422,
         "max_iter must be an int in the range [1, inf); got true"),
    Case("clf-deep-source", "classifier", FIT, raw(DEEP_SOURCE), 400, "CLASSIFIER_MAX_JSON_DEPTH"),
    Case("clf-nested-source", "classifier", FIT, raw(NESTED_SOURCE), 422, "CLASSIFIER_MAX_SOURCE_DEPTH"),
    Case("clf-blank-labels", "classifier", FIT, js(fit_json(labels=[" ", "  "] * (len(FEATURE_LABELS) // 2))), 422,
         "labels[0] is blank"),
    Case("clf-long-label", "classifier", FIT, js(fit_json(labels=["x" * 201] + FEATURE_LABELS[1:])), 422,
         "CLASSIFIER_MAX_LABEL_CHARS"),
    Case("clf-version-not-integer", "classifier", PREDICT + "?version=1.0", js({"features": tensor_json(FEATURES[:2])}), 422,
         "a version is a whole number written in digits"),
    # -- downstream models (issue 20) ---------------------------------------------------------------
    Case("ds-cls-targets-not-numbers", "classifier", FIT,
         js(fit_json(labels=None, targets=["high"] + [1.0] * (len(FEATURE_LABELS) - 1))), 422,
         "targets must be numbers: row 0 is 'high'"),
    Case("ds-cls-targets-nan", "classifier", FIT,
         raw(json.dumps(fit_json(labels=None, targets=[float("nan")] + [1.0] * (len(FEATURE_LABELS) - 1))).encode()),
         422, "targets must be finite numbers: row 0 is nan"),
    Case("ds-cls-unknown-step", "classifier", FIT, js(fit_json(preprocess=["whiten"])), 422,
         "unknown preprocess step 'whiten'"),
    Case("ds-cls-pca-wider-than-features", "classifier", FIT, js(fit_json(preprocess=[{"pca": DIM + 1}])), 422,
         f"pca asks for {DIM + 1} components, but the features it gets are {DIM} wide"),
    Case("ds-cls-unknown-calibration", "classifier", FIT, js(fit_json(calibrate="platt")), 422,
         "unknown calibration 'platt'"),
    Case("ds-cls-calibrate-regressor", "classifier", FIT,
         js(fit_json(labels=None, targets=[1.0] * len(FEATURE_LABELS), calibrate="sigmoid")), 422,
         "a regressor (targets) has none"),
    # -- gateway ---------------------------------------------------------------------------------
    Case("gw-malformed-json", "gateway", G_PREDICT, raw(b'{"texts": "'), 400, "not valid JSON"),
    Case("gw-invalid-utf8", "gateway", G_PREDICT, raw(BAD_UTF8), 400, "not valid UTF-8"),
    Case("gw-text-plain", "gateway", G_PREDICT, raw(b"hello", "text/plain"), 415, "text/plain"),
    Case("gw-texts-wrong-type", "gateway", G_PREDICT, js({"texts": [["nested"]]}), 422, "texts.0"),
    Case("gw-empty-list", "gateway", G_PREDICT, js({"texts": []}), 422, "at least 1 item"),
    Case("gw-huge-list", "gateway", G_PREDICT, js({"texts": ["hi"] * 9}), 413, "GATEWAY_MAX_TEXTS"),
    Case("gw-empty-string", "gateway", G_PREDICT, js({"texts": [""]}), 422, "texts[0] is empty"),
    Case("gw-huge-string", "gateway", G_PREDICT, js({"texts": ["x" * 201]}), 413, "201 characters"),
    Case("gw-lone-surrogate", "gateway", G_PREDICT, raw(b'{"texts": ["\\udfff"]}'), 422, "lone surrogate"),
    Case("gw-unknown-pipeline", "gateway", "/v1/pipelines/nothing/predict", js({"texts": ["hi"]}), 404,
         "no pipeline named 'nothing'"),
    Case("gw-unknown-version", "gateway", G_PREDICT + "?version=9", js({"texts": ["hi"]}), 404, "has no version 9"),
    Case("gw-version-float", "gateway", G_PREDICT + "?version=1.0", js({"texts": ["hi"]}), 422,
         "'1.0' is not a whole number"),
    Case("gw-version-bool", "gateway", G_PREDICT + "?version=true", js({"texts": ["hi"]}), 422,
         "'true' is not a whole number"),
    Case("gw-version-exponent", "gateway", G_PREDICT + "?version=1e0", js({"texts": ["hi"]}), 422,
         "'1e0' is not a whole number"),
    Case("gw-path-like-name", "gateway", "/v1/pipelines/..%2Fx/predict", js({"texts": ["hi"]}), 404, "Not Found"),
    Case("gw-bad-name", "gateway", "/v1/pipelines/Intents/predict", js({"texts": ["hi"]}), 422,
         "'Intents' is not a valid pipeline name"),
    Case("gw-labels-length", "gateway", G_TRAIN, js(train_json(labels=LABELS[:-1])), 422, "12 texts but 11 labels"),
    Case("gw-blank-label", "gateway", G_TRAIN, js(train_json(labels=LABELS[:-2] + [" ", "  "])), 422,
         "labels[10] is blank"),
    Case("gw-label-wrong-type", "gateway", G_TRAIN, js(train_json(labels=LABELS[:-1] + [True])), 422, "labels.11"),
    Case("gw-one-class", "gateway", G_TRAIN, js(train_json(labels=["billing"] * len(TEXTS))), 422, "at least two classes"),
    Case("gw-unknown-estimator", "gateway", G_TRAIN, js(train_json(estimator="random_forest")), 422, "random_forest"),
    Case("gw-unknown-param", "gateway", G_TRAIN, js(train_json(params={"learning_rat": 0.1})), 422, "learning_rat"),
    Case("gw-unknown-feature", "gateway", G_TRAIN, js(train_json(feature="logits")), 422, "unknown feature 'logits'"),
    Case("gw-path-like-feature", "gateway", G_TRAIN, js(train_json(feature="pipeline:../x")), 422,
         "'../x' is not a valid pipeline name"),
    Case("gw-missing-output", "gateway", G_TRAIN, js(train_json(feature="probabilities")), 422, "no probabilities output"),
    Case("gw-estimator-wrong-type", "gateway", G_TRAIN, js(train_json(estimator=5)), 422, "estimator"),
    Case("gw-train-huge-string", "gateway", G_TRAIN, js(train_json(texts=TEXTS[:-1] + ["x" * 201])), 413,
         "201 characters"),
    Case("gw-chain-too-deep", "gateway", "/v1/pipelines/deeper/train", js(train_json(feature="pipeline:intents")), 422,
         "maximum depth of 1 (GATEWAY_MAX_CHAIN_DEPTH)"),
    Case("gw-too-many-train-texts", "gateway", G_TRAIN, js(train_json(texts=["hi"] * 65, labels=["a"] * 65)), 413,
         "GATEWAY_MAX_TRAIN_TEXTS"),
    # -- gateway: downstream models and evaluate (issue 20) ----------------------------------------------
    Case("ds-gw-targets-not-numbers", "gateway", G_TRAIN,
         js(train_json(labels=None, targets=["high"] + [1.0] * (len(TEXTS) - 1))), 422, "targets must be numbers"),
    Case("ds-gw-targets-nan", "gateway", G_TRAIN,
         raw(json.dumps(train_json(labels=None, targets=[1.0] * (len(TEXTS) - 1) + [float("nan")])).encode()), 422,
         "targets must be finite numbers: targets[11] is nan"),
    Case("ds-gw-unknown-step", "gateway", G_TRAIN, js(train_json(preprocess=["standardize", "whiten"])), 422,
         "unknown preprocess step 'whiten'"),
    Case("ds-gw-pca-wider-than-features", "gateway", G_TRAIN, js(train_json(preprocess=[{"pca": 33}])), 422,
         "pca asks for 33 components, but the features it gets are 32 wide"),
    Case("ds-gw-evaluate-unknown-label", "gateway", G_EVALUATE, js({"texts": ["hi"], "labels": ["weather"]}), 422,
         "labels outside pipeline intents v1's classes: 'weather'"),
    Case("ds-gw-evaluate-targets-of-a-classifier", "gateway", G_EVALUATE, js({"texts": ["hi"], "targets": [1.0]}),
         422, "is a classifier: evaluate it with labels"),
    Case("ds-gw-evaluate-length", "gateway", G_EVALUATE, js({"texts": ["hi", "ho"], "labels": ["billing"]}), 422,
         "2 texts but 1 labels"),
]

# -- issue 15, the HTTP edge: no-content texts, deep JSON, lone surrogates, trailing slashes ---------
V2_INFER = "/v2/models/embedding/infer"
DEEP = b"[" * 3000 + b"]" * 3000


def deep(prefix: bytes, suffix: bytes = b"}") -> dict[str, Any]:
    return raw(prefix + DEEP + suffix)


def v2_text(text_json: str) -> dict[str, Any]:
    body = '{"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["%s"]}]}' % text_json
    return raw(body.encode())


def frame_with_deep_header() -> bytes:
    head = b'{"layout": "dense", "shape": [1, 8], "meta": ' + DEEP + b"}"
    return b"SEAM" + len(head).to_bytes(4, "little") + head + np.ones(8, np.float32).tobytes()


FOREIGN_HOST = {"host": "attacker.example"}
EDGE_CASES = [
    Case("enc-zero-width-text", "encoder", ENCODE, js({"texts": ["ok", "\u200b\u200b\u200c"]}), 422, "texts[1] is empty"),
    Case("enc-control-text", "encoder", ENCODE, js({"texts": ["\x00\x01\x7f\x9f"]}), 422, "texts[0] is empty"),
    Case("enc-combining-only", "encoder", ENCODE, js({"texts": ["\u0301\u0308\u20dd"]}), 422, "texts[0] is empty"),
    Case("enc-format-only", "encoder", ENCODE, js({"texts": ["ok", "ok", "\u202e\ufeff\u2060\U000e0001"]}), 422,
         "texts[2] is empty"),
    Case("enc-special-tokens-only", "encoder", ENCODE, js({"texts": ["ok", "\ufffd"]}), 422,
         "texts[1] is empty to the model: it tokenizes to special tokens only"),
    Case("enc-deep-json", "encoder", ENCODE, deep(b'{"texts": '), 400, "nests JSON 3001 levels deep; the limit is 64 (ENCODER_MAX_JSON_DEPTH)"),
    Case("enc-v2-deep-json", "encoder", V2_INFER, deep(b'{"inputs": '), 400, "ENCODER_MAX_JSON_DEPTH"),
    Case("enc-openai-deep-json", "encoder", "/v1/embeddings", deep(b'{"model": "m", "input": '), 400,
         "ENCODER_MAX_JSON_DEPTH"),
    Case("enc-v2-lone-surrogate", "encoder", V2_INFER, v2_text("a \\ud800 b"), 422,
         "element 0 is not valid Unicode: it holds a lone surrogate"),
    Case("enc-v2-zero-width", "encoder", V2_INFER, v2_text("\\u200b"), 422, "texts[0] is empty"),
    Case("enc-openai-lone-surrogate", "encoder", "/v1/embeddings", raw(b'{"model": "tiny-bert0", "input": ["ok", "a \\udc00"]}'),
         422, "lone surrogate"),
    Case("enc-openai-zero-width", "encoder", "/v1/embeddings", js({"model": "tiny-bert0", "input": "\u200b"}), 422, "is empty"),
    Case("enc-trailing-slash", "encoder", ENCODE + "/", {**js({"texts": ["ok"]}), "headers": FOREIGN_HOST}, 404, "Not Found"),
    Case("edge-clf-deep-fit", "classifier", FIT, deep(b'{"features": '), 400, "CLASSIFIER_MAX_JSON_DEPTH"),
    Case("edge-clf-deep-predict", "classifier", PREDICT, deep(b'{"features": '), 400, "CLASSIFIER_MAX_JSON_DEPTH"),
    Case("edge-clf-deep-frame-header", "classifier", PREDICT, raw(frame_with_deep_header(), BINARY_CONTENT_TYPE), 400,
         "nests JSON 3001 levels deep"),
    Case("edge-clf-v2-deep", "classifier", "/v2/models/m/infer", deep(b'{"inputs": '), 400, "CLASSIFIER_MAX_JSON_DEPTH"),
    Case("edge-clf-trailing-slash", "classifier", PREDICT + "/", {**js({"features": [[1.0] * DIM]}), "headers": FOREIGN_HOST},
         404, "Not Found"),
    Case("edge-gw-deep-json", "gateway", G_PREDICT, deep(b'{"texts": '), 400, "GATEWAY_MAX_JSON_DEPTH"),
    Case("edge-gw-deep-train", "gateway", G_TRAIN, deep(b'{"texts": ["a"], "labels": ["b"], "params": {"x": ', b"}}"),
         400, "GATEWAY_MAX_JSON_DEPTH"),
    Case("edge-gw-zero-width-text", "gateway", G_PREDICT, js({"texts": ["ok", "\u200b\u00ad\u2063"]}), 422,
         "texts[1] is empty"),
    Case("edge-gw-control-text", "gateway", G_PREDICT, js({"texts": ["\x00"]}), 422, "texts[0] is empty"),
    Case("edge-gw-train-combining", "gateway", G_TRAIN, js(train_json(texts=TEXTS[:-1] + ["\u0300"])), 422,
         "texts[11] is empty"),
    Case("edge-gw-long-label", "gateway", G_TRAIN, js(train_json(labels=LABELS[:-1] + ["x" * 201])), 413,
         "labels[11] has 201 characters; the limit is 200 (GATEWAY_MAX_LABEL_CHARS)"),
    Case("enc-tokens-json-too-large", "encoder", ENCODE, js({"texts": ["word " * 40] * 8, "output": "tokens"}), 413,
         "ENCODER_MAX_JSON_VALUES): ask for the binary frame"),
    Case("enc-v2-tokens-json-too-large", "encoder", "/v2/models/tokens/infer", v2_text("word " * 40), 413,
         "ENCODER_MAX_JSON_VALUES"),
    Case("edge-gw-trailing-slash", "gateway", G_PREDICT + "/", {**js({"texts": ["ok"]}), "headers": FOREIGN_HOST}, 404,
         "Not Found"),
]
CASES += EDGE_CASES

GOOD = {
    "encoder": (ENCODE, {"texts": ["still serving"]}),
    "classifier": (PREDICT, {"features": tensor_json(FEATURES[:2])}),
    "gateway": (G_PREDICT, {"texts": ["still serving"]}),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(tiny_bert, tmp_path_factory):
    async with world(tiny_bert, tmp_path_factory.mktemp("bad-input") / "models", **LIMITS) as w:
        assert (await w.classifier.post(FIT, json=fit_json())).status_code == 201
        trained = await w.gateway.post(G_TRAIN, json=train_json())
        assert trained.status_code == 201, trained.text
        yield w


def test_the_table_is_broad():
    assert len(CASES) >= 30 and {c.service for c in CASES} == {"encoder", "classifier", "gateway"}
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input_is_a_4xx_problem_and_the_service_keeps_serving(services, case: Case):
    client = services.client(case.service)
    response = await client.request(case.method, case.path, **case.request)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == case.status
    assert case.says in problem["detail"], problem["detail"]
    path, body = GOOD[case.service]
    assert (await client.post(path, json=body)).status_code == 200
