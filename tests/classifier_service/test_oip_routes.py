"""The classifier's Open Inference Protocol routes, in process, with bodies built and parsed by tritonclient."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from services import oip
from tests.classifier_service.synthetic import CLASSES, DIM, features_for, fit, tensor_json


def body_of(*inputs: tuple[str, np.ndarray, str], binary: bool = True, outputs=("PROBABILITIES", "LABEL")):
    items = []
    for name, array, datatype in inputs:
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        items.append(item)
    wanted = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    body, length = httpclient.InferenceServerClient.generate_request_body(items, outputs=wanted)
    return {"content": body, "headers": {oip.HEADER_LENGTH: str(length)} if length is not None else {}}


async def infer(client, path, **request):
    r = await client.post(path, **request)
    assert r.status_code == 200, r.text
    length = r.headers.get(oip.HEADER_LENGTH)
    return httpclient.InferenceServerClient.parse_response_body(r.content, header_length=int(length) if length else None)


async def predicted(client, name, features, kind):
    r = await client.post(f"/v1/models/{name}/predict", json={"features": tensor_json(features)})
    assert r.status_code == 200, r.text
    body = r.json()
    return [p["label"] for p in body["predictions"]], np.array([[p["probabilities"][c] for c in body["classes"]] for p in body["predictions"]])


async def test_metadata_describes_each_version(client):
    assert (await fit(client, "intents")).status_code == 201
    assert (await fit(client, "intents", kind="tokens")).status_code == 201
    latest = (await client.get("/v2/models/intents")).json()
    assert latest["versions"] == ["1", "2"] and latest["platform"] == "seam-classifier"
    assert latest["inputs"] == [{"name": "FEATURES", "datatype": "FP32", "shape": [-1, -1, DIM]},
                                {"name": "LENGTHS", "datatype": "INT32", "shape": [-1]}]
    assert latest["outputs"] == [{"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]},
                                 {"name": "LABEL", "datatype": "BYTES", "shape": [-1]}]
    assert latest["parameters"]["classes"] == list(CLASSES) and latest["parameters"]["version"] == 2
    first = (await client.get("/v2/models/intents/versions/1")).json()
    assert first["inputs"] == [{"name": "FEATURES", "datatype": "FP32", "shape": [-1, DIM]}]
    assert first["parameters"]["input_contract"]["kind"] == "embedding"
    assert (await client.get("/v2/models/intents/versions/1/ready")).json() == {"name": "intents", "ready": True}
    assert (await client.get("/v2/models/intents/ready")).status_code == 200
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}


@pytest.mark.parametrize("kind", ["embedding", "probabilities"])
@pytest.mark.parametrize("binary", [True, False])
async def test_dense_features_predict_like_v1(client, kind, binary):
    assert (await fit(client, "dense", kind=kind)).status_code == 201
    features, _, _ = features_for(kind, per_class=3, seed=5)
    result = await infer(client, "/v2/models/dense/infer", **body_of(("FEATURES", features, "FP32"), binary=binary))
    labels, probabilities = await predicted(client, "dense", features, kind)
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), probabilities, atol=1e-6)
    got = result.as_numpy("LABEL").tolist()
    assert [x.decode() if isinstance(x, bytes) else x for x in got] == labels
    assert result.get_response()["model_version"] == "1"


async def test_token_sequences_travel_padded_with_lengths(client):
    assert (await fit(client, "seq", kind="tokens")).status_code == 201
    ragged, _, _ = features_for("tokens", per_class=2, seed=3)
    padded, lengths = oip.padded(ragged.rows(), DIM)
    result = await infer(client, "/v2/models/seq/versions/1/infer",
                         **body_of(("FEATURES", padded, "FP32"), ("LENGTHS", lengths, "INT32")))
    labels, probabilities = await predicted(client, "seq", ragged, "tokens")
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), probabilities, atol=1e-5)
    assert [x.decode() for x in result.as_numpy("LABEL").tolist()] == labels


async def test_refusals_name_what_was_expected(client):
    assert (await fit(client, "dense")).status_code == 201
    assert (await fit(client, "seq", kind="tokens")).status_code == 201
    wide = np.ones((2, DIM + 1), dtype=np.float32)
    cases = [
        ("/v2/models/dense/infer", body_of(("FEATURES", wide, "FP32")), 422, f"dim: expected {DIM}, got {DIM + 1}"),
        ("/v2/models/dense/infer", body_of(("FEATURES", wide.astype(np.float64), "FP64")), 400, "must be FP32, got FP64"),
        ("/v2/models/dense/infer", body_of(("X", wide, "FP32")), 400, "missing input 'FEATURES'"),
        ("/v2/models/dense/infer", body_of(("FEATURES", np.ones(DIM, np.float32), "FP32")), 400, "2 dimensions"),
        ("/v2/models/dense/infer", body_of(("FEATURES", np.full((1, DIM), np.nan, np.float32), "FP32")), 422,
         "NaN or infinity"),
        ("/v2/models/seq/infer", body_of(("FEATURES", np.ones((2, 3, DIM), np.float32), "FP32")), 400, "send LENGTHS"),
        ("/v2/models/seq/infer", body_of(("FEATURES", np.ones((2, 3, DIM), np.float32), "FP32"),
                                         ("LENGTHS", np.array([1, 4], np.int32), "INT32")), 400, "between 0 and"),
        ("/v2/models/seq/infer", body_of(("FEATURES", np.ones((2, 3, DIM), np.float32), "FP32"),
                                         ("LENGTHS", np.array([0, 3], np.int32), "INT32")), 422, "at least 1 token per row, got 0 tokens in row 0"),
        ("/v2/models/nobody/infer", body_of(("FEATURES", wide, "FP32")), 404, "No model named 'nobody'"),
        ("/v2/models/dense/versions/9/infer", body_of(("FEATURES", wide, "FP32")), 404, "has no version 9"),
    ]
    for path, request, status, says in cases:
        r = await client.post(path, **request)
        assert r.status_code == status, (path, says, r.text)
        assert says in r.json()["error"], (says, r.json())
    assert (await client.get("/v2/models/nobody")).status_code == 404
    assert (await client.get("/v2/models/nobody/ready")).status_code == 404
