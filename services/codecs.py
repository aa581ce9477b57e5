"""Tensor codecs: JSON for people, a compact binary frame for service-to-service traffic.

Binary frame (content type ``application/vnd.seam.tensor``)::

    b"SEAM" | uint32 LE header length | header JSON (utf-8) | float32 LE values | int32 LE lengths

A dense tensor is ``values`` of shape ``(rows, dim)``. A ragged one (token sequences) travels as the
flat concatenation of its rows, ``(sum(lengths), dim)``, plus the per-row ``lengths``: no padding
crosses the wire. Values are always float32 on the wire, whatever precision computed them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINARY_CONTENT_TYPE = "application/vnd.seam.tensor"
_MAGIC = b"SEAM"
_WIRE_DTYPE = np.dtype("<f4")
_LENGTH_DTYPE = np.dtype("<i4")


class CodecError(ValueError):
    """A frame or JSON tensor that cannot be decoded."""


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
        values = np.ascontiguousarray(tensor.values, dtype=_WIRE_DTYPE)
        lengths = np.ascontiguousarray(tensor.lengths, dtype=_LENGTH_DTYPE)
        header.update(layout="ragged", shape=list(values.shape), rows=len(lengths))
        tail = values.tobytes() + lengths.tobytes()
    else:
        values = np.ascontiguousarray(tensor, dtype=_WIRE_DTYPE)
        if values.ndim != 2:
            raise CodecError(f"dense tensors must be 2-D (rows, dim), got shape {values.shape}")
        header.update(layout="dense", shape=list(values.shape))
        tail = values.tobytes()
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
        values = np.frombuffer(body, dtype=_WIRE_DTYPE, count=count, offset=start).reshape(shape)
        return Frame(values.astype(np.float32, copy=False), meta)
    if layout == "ragged":
        if rows < 0 or end + rows * _LENGTH_DTYPE.itemsize != len(body):
            raise CodecError("ragged frame length does not match its header")
        values = np.frombuffer(body, dtype=_WIRE_DTYPE, count=count, offset=start).reshape(shape)
        lengths = np.frombuffer(body, dtype=_LENGTH_DTYPE, count=rows, offset=end)
        return Frame(Ragged(values, lengths.astype(np.int64)), meta)
    raise CodecError(f"unknown frame layout {layout!r}")


def to_json(tensor: Tensor) -> list:
    """Nested lists: (rows, dim) for dense; one (length, dim) list per row for ragged."""
    if isinstance(tensor, Ragged):
        return [r.tolist() for r in tensor.rows()]
    return np.asarray(tensor, dtype=np.float32).tolist()


def _numeric(data: Any) -> np.ndarray:
    """``data`` as float32, refusing what JSON numbers are not: strings, null, booleans, objects."""
    array = np.asarray(data)
    if array.dtype.kind not in "iuf" and array.size:
        raise CodecError(f"not a numeric tensor: values must be JSON numbers, got {array.dtype.kind!r}-kind data")
    return array.astype(np.float32, copy=False)


def from_json(data: Any, *, ragged: bool, dim: int | None = None) -> Tensor:
    """The inverse of :func:`to_json`. Refuses ragged rows where a dense matrix is expected.
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
