"""Tensor codecs: JSON for people, a compact binary frame for service-to-service traffic, and the
tensors of the Open Inference Protocol (its JSON ``data`` and its binary tensor data extension).

Both binary formats write a tensor's values the same way (:func:`to_raw`, :func:`from_raw`): row-major,
little-endian, no padding, typed by :data:`DATATYPES`.

Binary frame (content type ``application/vnd.seam.tensor``)::

    b"SEAM" | uint32 LE header length | header JSON (utf-8) | float32 LE values | int32 LE lengths

A dense tensor is ``values`` of shape ``(rows, dim)``. A ragged one (token sequences) travels as the
flat concatenation of its rows, ``(sum(lengths), dim)``, plus the per-row ``lengths``: no padding
crosses the wire. Values are always float32 on the wire, whatever precision computed them.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINARY_CONTENT_TYPE = "application/vnd.seam.tensor"
_MAGIC = b"SEAM"

# Fixed-size datatypes (the Open Inference Protocol's names) and their little-endian wire layout.
# BYTES (OIP only) is variable-size, handled apart.
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
_WIRE_DTYPE = DATATYPES["FP32"]  # a frame's values, whatever precision computed them
_LENGTH_DTYPE = DATATYPES["INT32"]  # a ragged frame's row lengths


class CodecError(ValueError):
    """A frame or JSON tensor that cannot be decoded."""


def to_raw(array: np.ndarray, dtype: np.dtype) -> bytes:
    """A tensor's bytes on either binary wire: its values as ``dtype``, row-major, no padding."""
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_raw(buffer: bytes, dtype: np.dtype, shape: list[int], offset: int = 0) -> np.ndarray:
    """The inverse of :func:`to_raw`: a read-only view of ``shape`` values at ``offset`` (no copy)."""
    return np.frombuffer(buffer, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


@dataclass
class Ragged:
    """Variable-length sequences of vectors: flat ``values`` (total, dim) and per-row ``lengths``."""

    values: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.values.ndim != 2:
            raise CodecError(f"ragged values must be 2-D (total, dim), got shape {self.values.shape}")
        if self.lengths.ndim != 1 or (self.lengths < 0).any():
            raise CodecError("ragged lengths must be a 1-D list of non-negative counts")
        if int(self.lengths.sum()) != self.values.shape[0]:
            raise CodecError(f"lengths sum to {int(self.lengths.sum())} but there are {self.values.shape[0]} vectors")

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])

    def rows(self) -> list[np.ndarray]:
        """One (length, dim) array per sequence (views, no copies)."""
        o = self.offsets
        return [self.values[o[i] : o[i + 1]] for i in range(len(self.lengths))]

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], dim: int | None = None) -> Ragged:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        if rows and any(len(r) for r in rows):
            arrays = [np.asarray(r, dtype=np.float32) for r in rows]
            # An empty row cannot infer its width (reshape(0, -1) fails): take it from a non-empty one.
            width = next(a.reshape(len(a), -1).shape[1] for a in arrays if len(a))
            values = np.concatenate([a.reshape(len(a), width) for a in arrays])
        else:
            values = np.zeros((0, dim or 0), dtype=np.float32)
        return cls(values, lengths)


Tensor = np.ndarray | Ragged


@dataclass
class Frame:
    """A decoded binary frame: the tensor and the header's other fields (``meta``)."""

    tensor: Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def encode_binary(tensor: Tensor, meta: dict[str, Any] | None = None) -> bytes:
    header: dict[str, Any] = {"meta": meta or {}}
    if isinstance(tensor, Ragged):
        header.update(layout="ragged", shape=list(tensor.values.shape), rows=len(tensor.lengths))
        tail = to_raw(tensor.values, _WIRE_DTYPE) + to_raw(tensor.lengths, _LENGTH_DTYPE)
    else:
        shape = np.shape(tensor)
        if len(shape) != 2:
            raise CodecError(f"dense tensors must be 2-D (rows, dim), got shape {shape}")
        header.update(layout="dense", shape=list(shape))
        tail = to_raw(tensor, _WIRE_DTYPE)
    head = json.dumps(header, separators=(",", ":")).encode()
    return _MAGIC + struct.pack("<I", len(head)) + head + tail


def decode_binary(body: bytes) -> Frame:
    if len(body) < 8 or body[:4] != _MAGIC:
        raise CodecError("not a seam tensor frame (missing SEAM magic)")
    (n,) = struct.unpack_from("<I", body, 4)
    if 8 + n > len(body):
        raise CodecError("frame header runs past the end of the body")
    try:
        header = json.loads(body[8 : 8 + n])
        layout, shape = header["layout"], [int(x) for x in header["shape"]]
        rows = int(header.get("rows", -1))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CodecError(f"unreadable frame header: {exc}") from exc
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise CodecError("frame header 'meta' must be a JSON object")
    if len(shape) != 2 or min(shape) < 0:
        raise CodecError(f"frame shape must be (rows, dim), got {shape}")
    start = 8 + n
    count = shape[0] * shape[1]
    end = start + count * _WIRE_DTYPE.itemsize
    if layout == "dense":
        if end != len(body):
            raise CodecError(f"frame holds {len(body) - start} value bytes, shape {shape} needs {end - start}")
        return Frame(from_raw(body, _WIRE_DTYPE, shape, start).astype(np.float32, copy=False), meta)
    if layout == "ragged":
        if rows < 0 or end + rows * _LENGTH_DTYPE.itemsize != len(body):
            raise CodecError("ragged frame length does not match its header")
        lengths = from_raw(body, _LENGTH_DTYPE, [rows], end)
        return Frame(Ragged(from_raw(body, _WIRE_DTYPE, shape, start), lengths.astype(np.int64)), meta)
    raise CodecError(f"unknown frame layout {layout!r}")


def _numeric(data: Any) -> np.ndarray:
    """``data`` as float32, refusing what JSON numbers are not: strings, null, booleans, objects."""
    array = np.asarray(data)
    if array.dtype.kind not in "iuf" and array.size:
        raise CodecError(f"not a numeric tensor: values must be JSON numbers, got {array.dtype.kind!r}-kind data")
    return array.astype(np.float32, copy=False)


def from_json(data: Any, *, ragged: bool, dim: int | None = None) -> Tensor:
    """Nested lists to a tensor: (rows, dim) for dense; one (length, dim) list per row for ragged. Refuses ragged rows where a dense matrix is expected.
    ``dim`` gives the width of an empty batch, which JSON (``[]``) cannot carry."""
    if not isinstance(data, list):
        raise CodecError("a tensor must be a JSON list")
    try:
        if ragged:
            rows = [_numeric(r) for r in data]
            dims = {r.shape[1] for r in rows if r.ndim == 2 and len(r)}
            if any(r.ndim != 2 and r.size for r in rows) or len(dims) > 1:
                raise CodecError("each sequence must be a list of equally wide vectors")
            width = next(iter(dims), dim or 0)
            rows = [r.reshape(len(r), -1) if r.size else np.zeros((0, width), np.float32) for r in rows]
            return Ragged.from_rows(rows, dim=width)
        if not data:
            return np.zeros((0, dim or 0), dtype=np.float32)
        values = _numeric(data)
    except CodecError:
        raise
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not a numeric tensor: {exc}") from exc
    if values.ndim != 2:
        raise CodecError(f"expected a list of equally long vectors (rows, dim), got {values.ndim}-D data")
    return values


# -- Open Inference Protocol tensors ------------------------------------------------------------


class OIPError(CodecError):
    """A request that does not follow the protocol, or asks for what this model does not offer (400)."""


class OIPInvalidValue(OIPError):
    """A request that follows the protocol but holds a value no model can take, such as a string that
    is not valid Unicode (422)."""


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
    return from_raw(raw, dtype, shape)


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

def _bytes_items(array: np.ndarray) -> list[bytes]:
    return [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1).tolist()]


def tensor_to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == BYTES:
        return b"".join(struct.pack("<I", len(x)) + x for x in _bytes_items(array))
    return to_raw(array, _dtype(datatype, "output"))


def tensor_to_json(array: np.ndarray, datatype: str) -> list:
    """Row-major and flat, as tritonclient reads it (it reshapes to ``shape``)."""
    if datatype == BYTES:
        return [x.decode("utf-8", errors="replace") for x in _bytes_items(array)]
    return np.asarray(array, dtype=_dtype(datatype, "output")).reshape(-1).tolist()

