"""Features against a contract: decoding them from the wire and refusing the ones that do not fit.

Every refusal is a :class:`~services.errors.FeatureMismatch` (422) whose ``mismatches`` name the
field, what the contract expects and what arrived, in the shape of the compatibility check's
:class:`~services.compatibility.Mismatch`, so the gateway and a person read both the same way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from services.codecs import CodecError, Ragged, Tensor, from_json
from services.compatibility import Mismatch, check
from services.contracts import TensorContract
from services.errors import FeatureMismatch, InvalidInput, PayloadTooLarge
from services.wire import PROBABILITY_RANGE_TOLERANCE, PROBABILITY_SUM_TOLERANCE

_SHOWN = 5  # row indices quoted in a message


def _describe(contract: TensorContract) -> str:
    if contract.kind == "tokens":
        return f"tokens: one list of {contract.dim}-wide token vectors per row"
    return f"{contract.kind}: one {contract.dim}-wide vector per row"


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:_SHOWN])
    return f"row {shown}" if len(rows) == 1 else f"{len(rows)} rows ({shown}{', ...' if len(rows) > _SHOWN else ''})"


class _Refusal:
    """Collects mismatches, then raises them together."""

    def __init__(self, subject: str, consumer: str) -> None:
        self.subject, self.consumer = subject, consumer
        self.found: list[Mismatch] = []

    def add(self, field: str, expected: Any, actual: Any, message: str) -> None:
        self.found.append(
            Mismatch(field=field, expected=expected, actual=actual, message=message, producer="request", consumer=self.consumer)
        )

    def extend(self, mismatches: list[Mismatch]) -> None:
        self.found.extend(mismatches)

    def raise_if_any(self, **extra: Any) -> None:
        if not self.found:
            return
        summary = "; ".join(f"{m.field}: expected {m.expected}, got {m.actual}" for m in self.found)
        raise FeatureMismatch(
            f"{self.subject[:1].upper()}{self.subject[1:]} do not match {self.consumer}: {summary}.",
            mismatches=[m.model_dump() for m in self.found],
            **extra,
        )


def _depth(rows: list) -> int:
    """1 when rows are vectors (lists of numbers), 2 when rows are lists of vectors, 0 if unknown."""
    for row in rows:
        if isinstance(row, list) and row:
            return 2 if isinstance(row[0], list) else 1
    return 0


def decode(data: Any, contract: TensorContract, *, subject: str, consumer: str, **extra: Any) -> Tensor:
    """Turns wire features (a JSON list, or a tensor decoded from a binary frame) into the layout the
    contract's kind needs: ragged sequences for ``tokens``, a dense (rows, dim) matrix otherwise."""
    ragged = contract.kind == "tokens"
    refusal = _Refusal(subject, consumer)
    if isinstance(data, (np.ndarray, Ragged)):
        if isinstance(data, Ragged) != ragged:
            got = "ragged sequences (tokens)" if isinstance(data, Ragged) else "a dense (rows, dim) matrix"
            refusal.add("kind", _describe(contract), got, "the frame's layout does not fit the contract's kind")
            refusal.raise_if_any(**extra)
        return data
    if not isinstance(data, list) or not data:
        raise InvalidInput(f"{subject}: features must be a non-empty list of rows.")
    depth = _depth(data)
    if ragged and depth == 1:
        refusal.add("kind", _describe(contract), "one vector per row (embedding or probabilities)", "sequences expected")
    elif not ragged and depth == 2:
        refusal.add("kind", _describe(contract), "a list of vectors per row (tokens)", "one vector per row expected")
    elif not ragged:
        widths = sorted({len(r) for r in data if isinstance(r, list)})
        if len(widths) > 1:
            refusal.add(
                "shape", f"(rows, {contract.dim}): every row {contract.dim} wide", f"rows of widths {widths[:_SHOWN]}",
                "ragged rows where a dense matrix is expected",
            )
    refusal.raise_if_any(**extra)
    try:
        return from_json(data, ragged=ragged)
    except CodecError as exc:
        raise InvalidInput(f"{subject}: {exc}") from exc


def validate(
    features: Tensor,
    contract: TensorContract,
    *,
    subject: str,
    consumer: str,
    max_rows: int,
    declared: TensorContract | None = None,
    **extra: Any,
) -> None:
    """Refuses features that do not fit ``contract``: width, finite values, sequence lengths,
    probability rows. ``declared`` (the producer's contract, when the caller sends it) is also
    checked against ``contract`` with the compatibility check: dtype, space, labels."""
    rows = len(features)
    if rows == 0:
        raise InvalidInput(f"{subject}: no rows.")
    if rows > max_rows:
        raise PayloadTooLarge(f"{subject}: {rows} rows, at most {max_rows} per request.", limit_rows=max_rows)
    refusal = _Refusal(subject, consumer)
    if declared is not None:
        refusal.extend(check(declared, contract, producer="request", consumer=consumer))
        refusal.raise_if_any(**extra)
    dim = features.dim if isinstance(features, Ragged) else int(features.shape[1])
    if dim != contract.dim:
        refusal.add("dim", contract.dim, dim, f"{contract.kind} vectors must be {contract.dim} wide")
        refusal.raise_if_any(**extra)
    values = features.values if isinstance(features, Ragged) else features
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        if isinstance(features, Ragged):  # token index -> the row it belongs to
            bad_rows = np.unique(np.searchsorted(features.offsets, np.flatnonzero(bad), side="right") - 1)
        else:
            bad_rows = np.flatnonzero(bad)
        refusal.add("values", "finite numbers", f"NaN or infinity in {_rows_text(bad_rows)}", "non-finite values")
        refusal.raise_if_any(**extra)
    if isinstance(features, Ragged):
        empty = np.flatnonzero(features.lengths == 0)
        if len(empty):
            refusal.add("sequence_length", "at least 1 token per row", f"0 tokens in {_rows_text(empty)}", "empty sequences")
        if contract.space is not None:
            limit = contract.space.max_tokens
            long = np.flatnonzero(features.lengths > limit)
            if len(long):
                refusal.add(
                    "sequence_length", f"at most {limit} tokens (the encoder's window)",
                    f"{int(features.lengths.max())} tokens in {_rows_text(long)}", "sequences longer than the window",
                )
    if contract.kind == "probabilities":
        t = PROBABILITY_RANGE_TOLERANCE
        outside = np.flatnonzero(((values < -t) | (values > 1 + t)).any(axis=1))
        if len(outside):
            refusal.add("values", "probabilities in [0, 1]", f"values outside [0, 1] in {_rows_text(outside)}", "not probabilities")
        sums = values.sum(axis=1, dtype=np.float64)
        off = np.flatnonzero(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
        if len(off):
            refusal.add(
                "row_sum", f"1 ± {PROBABILITY_SUM_TOLERANCE}", f"{sums[off[0]]:.6g} in {_rows_text(off)}",
                "probability rows must sum to 1",
            )
    refusal.raise_if_any(**extra)


def values_of(features: Tensor) -> np.ndarray:
    """The feature values as one 2-D array: a dense matrix, or every token vector of ragged sequences."""
    return features.values if isinstance(features, Ragged) else features


def take(features: Tensor, index: np.ndarray) -> Tensor:
    """The rows ``index`` of dense or ragged features."""
    if isinstance(features, Ragged):
        rows = features.rows()
        return Ragged.from_rows([rows[i] for i in index], dim=features.dim)
    return features[index]


def data_sha256(features: Tensor, labels: list[str], kind: str) -> str:
    """A hash of the training data: kind, float32 values, sequence lengths and labels."""
    digest = hashlib.sha256(kind.encode())
    values = features.values if isinstance(features, Ragged) else features
    digest.update(str(values.shape).encode())
    digest.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
    if isinstance(features, Ragged):
        digest.update(np.ascontiguousarray(features.lengths, dtype="<i8").tobytes())
    digest.update(json.dumps(labels, ensure_ascii=False).encode())
    return digest.hexdigest()
