"""services.oip: the Open Inference Protocol data model and binary extension, checked against
tritonclient's own encoder and decoder (the client users run), not against a re-implementation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.http as httpclient

from services import oip


def _triton_request(*inputs: tuple[str, np.ndarray, str, bool], outputs=None, **parameters):
    built = []
    for name, array, datatype, binary in inputs:
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        built.append(item)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        built, outputs=outputs, parameters=parameters or None
    )
    return body, header_length


@pytest.mark.parametrize("binary", [False, True])
def test_decodes_what_tritonclient_sends(binary):
    texts = np.array(["Where is my parcel?", "naïve café", ""], dtype=object)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    lengths = np.array([1, 2, 3], dtype=np.int32)
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    body, header_length = _triton_request(
        ("TEXT", texts, "BYTES", binary), ("V", vectors, "FP32", binary), ("L", lengths, "INT32", binary),
        ("IDS", ids, "INT64", binary),
    )
    assert (header_length is not None) == binary
    decoded = oip.decode_request(body, header_length)
    assert decoded.tensors["TEXT"].tolist() == [t.encode() for t in texts]
    np.testing.assert_array_equal(decoded.tensors["V"], vectors)
    assert decoded.tensors["V"].dtype == np.float32
    assert decoded.tensors["L"].dtype == np.int32 and decoded.tensors["L"].tolist() == [1, 2, 3]
    assert decoded.tensors["IDS"].shape == (2, 2) and decoded.tensors["IDS"].dtype == np.int64
    assert decoded.datatypes == {"TEXT": "BYTES", "V": "FP32", "L": "INT32", "IDS": "INT64"}


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_reads_what_we_answer(binary):
    vectors = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    labels = np.array([b"billing", "shipping"], dtype=object)
    truncated = np.array([True, False])
    outputs = [
        (oip.OutputTensor("TOKENS", "FP32", vectors), binary),
        (oip.OutputTensor("LABEL", "BYTES", labels), binary),
        (oip.OutputTensor("TRUNCATED", "BOOL", truncated), binary),
        (oip.OutputTensor("LENGTHS", "INT32", np.array([3, 1], dtype=np.int32)), not binary),
    ]
    body, header_length = oip.encode_response("tokens", "1", "req-7", outputs)
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("TOKENS"), vectors)
    assert result.as_numpy("LABEL").tolist() == [b"billing", b"shipping"] if binary else ["billing", "shipping"]
    assert result.as_numpy("TRUNCATED").tolist() == [True, False]
    assert result.as_numpy("LENGTHS").tolist() == [3, 1]
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("tokens", "1", "req-7")
    header = json.loads(body if header_length is None else body[:header_length])
    assert oip.InferenceResponse.model_validate(header).outputs[0].shape == [2, 3, 5]


def test_requested_outputs_follow_binary_flags():
    request = oip.InferenceRequest.model_validate({
        "inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
        "outputs": [{"name": "LABEL", "parameters": {"binary_data": True}}, {"name": "PROBABILITIES"}],
    })
    assert oip.requested_outputs(request, ["PROBABILITIES", "LABEL"]) == [("LABEL", True), ("PROBABILITIES", False)]
    everything = request.model_copy(update={"outputs": None, "parameters": {"binary_data_output": True}})
    assert oip.requested_outputs(everything, ["A", "B"]) == [("A", True), ("B", True)]
    with pytest.raises(oip.OIPError, match="unknown output 'NOPE'"):
        oip.requested_outputs(request.model_copy(update={"outputs": [oip.RequestOutput(name="NOPE")]}), ["A"])
    with pytest.raises(oip.OIPError, match="classification extension"):
        oip.requested_outputs(
            request.model_copy(update={"outputs": [oip.RequestOutput(name="A", parameters={"classification": 2})]}), ["A"]
        )


def _json(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "says"),
    [
        (b"{", None, "not valid JSON"),
        (_json([]), None, "inputs"),
        (_json([{"name": "X", "shape": [2], "datatype": "FP32", "data": [1.0]}]), None, "1 values for shape [2]"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32", "data": ["a"]}]), None, "JSON numbers"),
        (_json([{"name": "X", "shape": [1], "datatype": "INT32", "data": [1.5]}]), None, "JSON numbers"),
        (_json([{"name": "X", "shape": [1], "datatype": "BYTES", "data": [3]}]), None, "must be strings"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP8", "data": [1]}]), None, "unknown datatype 'FP8'"),
        (_json([{"name": "X", "shape": [-1], "datatype": "FP32", "data": [1]}]), None, "non-negative"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32"}]), None, "neither data nor binary_data_size"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32", "data": [1]}] * 2), None, "appears twice"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}]), None,
         "shared memory"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]), "len",
         "4 bytes after the JSON object belong to no input"),
        (_json([{"name": "X", "shape": [1], "datatype": "FP32", "data": [1]}]), 10_000, "only"),
        (_json([{"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]), "len4",
         "shape [2] of FP32 needs 8"),
        (_json([{"name": "X", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]), "len",
         "runs past the end"),
    ],
)
def test_malformed_requests_say_what_is_wrong(body, header_length, says):
    if header_length in ("len", "len4"):  # the JSON part's length; a binary tail follows it
        head = body
        tail = b"\0" * 4 if header_length == "len4" else b"\x09\0\0\0ab" if b'"BYTES"' in head else b"\0" * 8
        body, header_length = head + tail, len(head)
    with pytest.raises(oip.OIPError, match=re.escape(says)):
        oip.decode_request(body, header_length)


def test_header_length_must_be_a_count():
    assert oip.parse_header_length(None) is None and oip.parse_header_length("12") == 12
    with pytest.raises(oip.OIPError):
        oip.parse_header_length("twelve")
    with pytest.raises(oip.OIPError):
        oip.parse_header_length("-1")


def test_nested_json_data_and_padding():
    request = _json([{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}])
    np.testing.assert_array_equal(oip.decode_request(request, None).tensors["X"], [[1, 2], [3, 4.5]])
    values, lengths = oip.padded([np.ones((2, 3)), np.ones((0, 3)), np.full((1, 3), 2.0)], 3)
    assert values.shape == (3, 2, 3) and lengths.tolist() == [2, 0, 1]
    assert values[1].sum() == 0 and values[2, 1].sum() == 0
