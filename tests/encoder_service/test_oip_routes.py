"""The encoder's Open Inference Protocol routes, in process, with bodies built and parsed by tritonclient.
(tests/integration/test_clients.py drives a real process with tritonclient's HTTP client itself.)"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from services import oip

TEXTS = ["where is my parcel", "I was charged twice", "hello"]


def triton_body(texts, *, binary=True, outputs=None, name="TEXT", datatype="BYTES"):
    item = httpclient.InferInput(name, [len(texts)], datatype)
    item.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    body, header_length = httpclient.InferenceServerClient.generate_request_body([item], outputs=wanted)
    headers = {oip.HEADER_LENGTH: str(header_length)} if header_length is not None else {}
    return body, headers


async def infer(client, model, texts=TEXTS, *, binary=True, outputs=None, path=None):
    body, headers = triton_body(texts, binary=binary, outputs=outputs)
    r = await client.post(path or f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    length = r.headers.get(oip.HEADER_LENGTH)
    assert (length is not None) == binary
    return httpclient.InferenceServerClient.parse_response_body(r.content, header_length=int(length) if length else None), r


async def test_health_and_server_metadata(tiny_client):
    assert (await tiny_client.get("/v2/health/live")).json() == {"live": True}
    assert (await tiny_client.get("/v2/health/ready")).status_code == 200
    meta = (await tiny_client.get("/v2")).json()
    assert meta["extensions"] == ["binary_tensor_data"] and meta["name"] == "seam-encoder"


async def test_model_metadata_follows_the_contracts(tiny_client):
    outputs = (await tiny_client.get("/v1/outputs")).json()["outputs"]
    embedding = (await tiny_client.get("/v2/models/embedding")).json()
    assert embedding["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert embedding["outputs"] == [
        {"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 32]},
        {"name": "TRUNCATED", "datatype": "BOOL", "shape": [-1]},
    ]
    assert embedding["versions"] == ["1"]
    assert embedding["parameters"]["contract"] == outputs["embedding"]["contract"]
    assert embedding["parameters"]["contract_id"] == outputs["embedding"]["id"]
    tokens = (await tiny_client.get("/v2/models/tokens/versions/1")).json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in tokens["outputs"]] == [
        ("TOKENS", "FP32", [-1, -1, 32]), ("LENGTHS", "INT32", [-1]), ("TRUNCATED", "BOOL", [-1]),
    ]
    assert (await tiny_client.get("/v2/models/embedding/ready")).json() == {"name": "embedding", "ready": True}


@pytest.mark.parametrize("binary", [True, False])
async def test_embeddings_equal_v1_encode(tiny_client, binary):
    # Without requested outputs tritonclient asks for all of them as binary data: name them for JSON.
    result, response = await infer(tiny_client, "embedding", binary=binary, outputs=["EMBEDDING", "TRUNCATED"])
    expected = (await tiny_client.post("/v1/encode", json={"texts": TEXTS})).json()
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), np.array(expected["data"]), atol=1e-6)
    assert result.as_numpy("EMBEDDING").dtype == np.float32
    assert result.as_numpy("TRUNCATED").tolist() == [False, False, False]
    assert response.headers["x-seam-contract"] == expected["contract_id"]
    assert result.get_response()["model_version"] == "1"


async def test_tokens_are_padded_with_their_lengths(tiny_client):
    result, _ = await infer(tiny_client, "tokens", outputs=["TOKENS", "LENGTHS"], path="/v2/models/tokens/versions/1/infer")
    expected = (await tiny_client.post("/v1/encode", json={"texts": TEXTS, "output": "tokens"})).json()
    tokens, lengths = result.as_numpy("TOKENS"), result.as_numpy("LENGTHS")
    assert lengths.tolist() == expected["token_counts"] and tokens.shape == (3, max(lengths), 32)
    for row, length, want in zip(tokens, lengths, expected["data"]):
        np.testing.assert_allclose(row[:length], np.array(want), atol=1e-6)
        assert not row[length:].any()
    assert result.as_numpy("TRUNCATED") is None  # not asked for


async def test_probabilities_and_labels(classifier_client):
    meta = (await classifier_client.get("/v2/models/probabilities")).json()
    assert meta["outputs"][0] == {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]}
    assert meta["parameters"]["contract"]["labels"] == ["negative", "neutral", "positive"]
    result, _ = await infer(classifier_client, "probabilities", binary=False, outputs=["PROBABILITIES", "LABEL"])
    probabilities = result.as_numpy("PROBABILITIES")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    labels = ["negative", "neutral", "positive"]
    assert result.as_numpy("LABEL").tolist() == [labels[i] for i in probabilities.argmax(axis=1)]


async def test_texts_beyond_the_window_say_so(tiny_client):
    result, _ = await infer(tiny_client, "embedding", ["parcel " * 100, "parcel"])
    assert result.as_numpy("TRUNCATED").tolist() == [True, False]


async def test_a_batch_of_shape_n_by_1_is_accepted(tiny_client):
    item = httpclient.InferInput("TEXT", [2, 1], "BYTES")
    item.set_data_from_numpy(np.array([["hello"], ["parcel"]], dtype=object))
    body, length = httpclient.InferenceServerClient.generate_request_body([item])
    r = await tiny_client.post("/v2/models/embedding/infer", content=body, headers={oip.HEADER_LENGTH: str(length)})
    result = httpclient.InferenceServerClient.parse_response_body(r.content, header_length=int(r.headers[oip.HEADER_LENGTH]))
    assert result.as_numpy("EMBEDDING").shape == (2, 32)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v2/models/probabilities/infer", None, 404, "no model 'probabilities'"),
        ("/v2/models/embedding/versions/2/infer", None, 404, "only version 1"),
        ("/v2/models/embedding/infer", {"inputs": [{"name": "TEXTS", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
         400, "missing input 'TEXT'"),
        ("/v2/models/embedding/infer", {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
         400, "must be BYTES"),
        ("/v2/models/embedding/infer", {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [" "]}]},
         422, "texts[0] is empty"),
        ("/v2/models/embedding/infer", {"inputs": [{"name": "TEXT", "shape": [0], "datatype": "BYTES", "data": []}]},
         422, "no texts"),
        ("/v2/models/embedding/infer", {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                                        "outputs": [{"name": "LOGITS"}]}, 400, "unknown output 'LOGITS'"),
    ],
)
async def test_refusals_carry_the_oip_error_member(tiny_client, path, body, status, says):
    body = body or {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    r = await tiny_client.post(path, json=body)
    assert r.status_code == status, r.text
    problem = r.json()
    assert says in problem["error"] and problem["error"] == problem["detail"]
    assert r.headers["content-type"] == "application/problem+json"


async def test_unknown_models_and_the_not_ready_state(tiny_client):
    r = await tiny_client.get("/v2/models/nope")
    assert r.status_code == 404 and "this encoder serves ['embedding', 'tokens']" in r.json()["error"]
    assert (await tiny_client.get("/v2/models/nope/ready")).status_code == 404
    # Outside /v2, problems stay plain problem+json.
    assert "error" not in (await tiny_client.post("/v1/encode", json={"texts": []})).json()
