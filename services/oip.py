"""The Open Inference Protocol (KServe v2 / Triton HTTP) data model and its binary tensor data extension.

Pure: pydantic and numpy, no I/O and no web framework. The services' thin ``oip_routes`` modules
use it to speak the protocol that ``tritonclient``, KServe and MLServer clients speak.

Binary tensor data extension: the request or response body starts with the JSON object, whose length
the ``Inference-Header-Content-Length`` header gives; the raw tensors follow it, in the order of the
inputs (request) or outputs (response) whose ``parameters`` carry ``binary_data_size``. Numeric
tensors are little-endian and row-major, with no padding; a BYTES element is a 4-byte little-endian
length followed by that many bytes. A client asks for binary outputs with ``binary_data: true`` on a
requested output, or ``binary_data_output: true`` in the request's parameters.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
EXTENSIONS = ["binary_tensor_data"]

# Fixed-size datatypes and their little-endian wire layout. BYTES is variable-size, handled apart.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"

Parameters = dict[str, Any]


class OIPError(ValueError):
    """A request that does not follow the protocol, or asks for what this model does not offer (400)."""


class OIPInvalidValue(OIPError):
    """A request that follows the protocol but holds a value no model can take, such as a string that
    is not valid Unicode (422)."""


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


def _elements(shape: list[int], name: str) -> int:
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise OIPError(f"input {name!r}: shape {shape} must list non-negative sizes")
    return math.prod(shape)


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise OIPError(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise OIPError(f"input {name!r}: a BYTES element of {n} bytes runs past the end of its data")
        items.append(bytes(raw[offset : offset + n]))
        offset += n
    return items


def _object_array(items: list, shape: list[int]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def tensor_from_binary(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = _elements(shape, name)
    if datatype == BYTES:
        items = _bytes_elements(raw, name)
        if len(items) != count:
            raise OIPError(f"input {name!r}: {len(items)} BYTES elements for shape {shape} ({count} elements)")
        return _object_array(items, shape)
    dtype = _dtype(datatype, name)
    if len(raw) != count * dtype.itemsize:
        raise OIPError(
            f"input {name!r}: {len(raw)} bytes of binary data, shape {shape} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    flat: list = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested body must not exhaust the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def tensor_from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = _elements(shape, name)
    flat = _flatten(data)
    if len(flat) != count:
        raise OIPError(f"input {name!r}: {len(flat)} values for shape {shape} ({count} elements)")
    if datatype == BYTES:
        if any(not isinstance(x, str) for x in flat):
            raise OIPError(f"input {name!r}: BYTES data in JSON must be strings")
        try:
            return _object_array([x.encode() for x in flat], shape)
        except UnicodeEncodeError as exc:
            index = next(i for i, x in enumerate(flat) if not _encodable(x))
            raise OIPInvalidValue(
                f"input {name!r}: element {index} is not valid Unicode: it holds a lone surrogate "
                f"{exc.object[exc.start]!r} at character {exc.start}; send UTF-8 text"
            ) from None
    dtype = _dtype(datatype, name)
    if dtype.kind == "b":
        ok = all(isinstance(x, bool) for x in flat)
    elif dtype.kind in "iu":
        ok = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
    else:
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat)
    if not ok:
        raise OIPError(f"input {name!r}: {datatype} data must be JSON {'booleans' if dtype.kind == 'b' else 'numbers'}")
    try:
        return np.asarray(flat, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise OIPError(f"input {name!r}: a value does not fit {datatype}") from exc


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _dtype(datatype: str, name: str) -> np.dtype:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise OIPError(f"tensor {name!r}: unknown datatype {datatype!r}; one of {sorted([*DATATYPES, BYTES])}") from None


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


def _bytes_items(array: np.ndarray) -> list[bytes]:
    return [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1).tolist()]


def tensor_to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == BYTES:
        return b"".join(struct.pack("<I", len(x)) + x for x in _bytes_items(array))
    return np.ascontiguousarray(array, dtype=_dtype(datatype, "output")).tobytes()


def tensor_to_json(array: np.ndarray, datatype: str) -> list:
    """Row-major and flat, as tritonclient reads it (it reshapes to ``shape``)."""
    if datatype == BYTES:
        return [x.decode("utf-8", errors="replace") for x in _bytes_items(array)]
    return np.asarray(array, dtype=_dtype(datatype, "output")).reshape(-1).tolist()


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
