"""The Open Inference Protocol (KServe v2 / Triton HTTP) data model and its binary tensor data extension.

Pure: pydantic and numpy, no I/O and no web framework (each tensor's values: :mod:`services.codecs`).
The HTTP kit's router (:mod:`services.http.oip`) uses it to speak the protocol that ``tritonclient``,
KServe and MLServer clients speak.

Binary tensor data extension: the request or response body starts with the JSON object, whose length
the ``Inference-Header-Content-Length`` header gives; the raw tensors follow it, in the order of the
inputs (request) or outputs (response) whose ``parameters`` carry ``binary_data_size``. Numeric
tensors are little-endian and row-major, with no padding; a BYTES element is a 4-byte little-endian
length followed by that many bytes. A client asks for binary outputs with ``binary_data: true`` on a
requested output, or ``binary_data_output: true`` in the request's parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.codecs import OIPError, tensor_from_binary, tensor_from_json, tensor_to_binary, tensor_to_json

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
EXTENSIONS = ["binary_tensor_data"]

Parameters = dict[str, Any]


# -- the data model ------------------------------------------------------------------------------


class TensorMetadata(BaseModel):
    """One input or output of a model: name, datatype and shape (-1 for a dimension of any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]``. ``parameters`` is seam's addition: the contract."""

    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = None


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str] = Field(default_factory=lambda: list(EXTENSIONS))


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    """An input tensor: ``data`` in JSON (flat or nested, row-major), or ``binary_data_size`` bytes after the JSON."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """An output the client asks for; ``parameters.binary_data`` asks for it as binary data."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}[/versions/{version}]/infer``: the JSON part of the body."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list | None = None


class InferenceResponse(BaseModel):
    """The JSON part of an inference response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


# -- decoded tensors -----------------------------------------------------------------------------


@dataclass
class DecodedRequest:
    """An inference request with its input tensors as numpy arrays (BYTES: an object array of bytes)."""

    request: InferenceRequest
    tensors: dict[str, np.ndarray]
    datatypes: dict[str, str]


@dataclass
class OutputTensor:
    """What a model produced: ``array`` is sent as ``datatype`` (BYTES: bytes or str elements)."""

    name: str
    datatype: str
    array: np.ndarray
    parameters: Parameters = field(default_factory=dict)


def parse_header_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise OIPError(f"{HEADER_LENGTH} must be a byte count, got {value!r}") from None
    if length < 0:
        raise OIPError(f"{HEADER_LENGTH} must not be negative")
    return length


def decode_request(body: bytes, header_length: int | None) -> DecodedRequest:
    """The JSON object (all of ``body``, or its first ``header_length`` bytes) and every input tensor."""
    if header_length is not None and header_length > len(body):
        raise OIPError(f"{HEADER_LENGTH} is {header_length} but the body has only {len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    tail = memoryview(body)[len(head) :]
    try:
        raw = json.loads(head)
    except ValueError as exc:
        raise OIPError(f"the inference request is not valid JSON: {exc}") from exc
    try:
        request = InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise OIPError(f"the inference request does not follow the protocol: {where}: {first['msg']}") from exc
    tensors: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for item in request.inputs:
        if item.name in tensors:
            raise OIPError(f"input {item.name!r} appears twice")
        params = item.parameters or {}
        if any(key.startswith("shared_memory") for key in params):
            raise OIPError(f"input {item.name!r}: the shared memory extension is not supported; send the data")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise OIPError(f"input {item.name!r}: binary_data_size must be a byte count")
            if offset + size > len(tail):
                raise OIPError(f"input {item.name!r}: binary_data_size {size} runs past the end of the body")
            tensors[item.name] = tensor_from_binary(bytes(tail[offset : offset + size]), item.datatype, item.shape, item.name)
            offset += size
        elif item.data is not None:
            tensors[item.name] = tensor_from_json(item.data, item.datatype, item.shape, item.name)
        else:
            raise OIPError(f"input {item.name!r} has neither data nor binary_data_size")
        datatypes[item.name] = item.datatype
    if offset != len(tail):
        raise OIPError(f"{len(tail) - offset} bytes after the JSON object belong to no input (binary_data_size)")
    return DecodedRequest(request, tensors, datatypes)


def requested_outputs(request: InferenceRequest, offered: list[str]) -> list[tuple[str, bool]]:
    """The outputs to return, in order, each with whether it goes as binary data. No ``outputs`` in
    the request means all of them; ``binary_data_output`` sets the default for each."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [(name, default) for name in offered]
    chosen: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in offered:
            raise OIPError(f"unknown output {output.name!r}; this model offers {offered}")
        params = output.parameters or {}
        if params.get("classification"):
            raise OIPError("the classification extension is not supported; ask for PROBABILITIES and LABEL")
        if any(key.startswith("shared_memory") for key in params):
            raise OIPError(f"output {output.name!r}: the shared memory extension is not supported")
        chosen.append((output.name, bool(params.get("binary_data", default))))
    return chosen


def encode_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: list[tuple[OutputTensor, bool]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it (else None)."""
    described: list[ResponseOutput] = []
    raw: list[bytes] = []
    for tensor, binary in outputs:
        params = dict(tensor.parameters)
        data = None
        if binary:
            chunk = tensor_to_binary(tensor.array, tensor.datatype)
            params["binary_data_size"] = len(chunk)
            raw.append(chunk)
        else:
            data = tensor_to_json(tensor.array, tensor.datatype)
        described.append(
            ResponseOutput(name=tensor.name, shape=list(tensor.array.shape), datatype=tensor.datatype,
                           parameters=params or None, data=data)
        )
    response = InferenceResponse(model_name=model_name, model_version=model_version, id=request_id, outputs=described)
    head = json.dumps(response.model_dump(exclude_none=True), separators=(",", ":")).encode()
    if not raw:
        return head, None
    return head + b"".join(raw), len(head)


def padded(rows: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length sequences of vectors as one zero-padded (rows, longest, dim) array and their lengths."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    out = np.zeros((len(rows), int(lengths.max(initial=0)), dim), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths
