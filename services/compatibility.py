"""The compatibility check: does what a producer emits fit what a consumer was fitted on?"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.contracts import EmbeddingSpace, TensorContract

DEFAULT_FINGERPRINT_TOLERANCE = 0.999

_EXACT_SPACE_FIELDS = ("model_id", "weights_sha256", "pooling", "normalized", "max_tokens")


class Mismatch(BaseModel):
    """One field on which the producer and the consumer disagree."""

    model_config = ConfigDict(frozen=True)

    field: str
    expected: Any
    actual: Any
    message: str
    producer: str | None = None
    consumer: str | None = None


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return dot / (na * nb)


def _fingerprint_mismatch(expected: EmbeddingSpace, actual: EmbeddingSpace, tolerance: float) -> str | None:
    if not expected.fingerprint or not actual.fingerprint:
        return None  # nothing to compare: one side recorded no canaries
    if len(expected.fingerprint) != len(actual.fingerprint) or any(
        len(e) != len(a) for e, a in zip(expected.fingerprint, actual.fingerprint)
    ):
        return "canary vectors have different counts or widths"
    cosines = [_cosine(e, a) for e, a in zip(expected.fingerprint, actual.fingerprint)]
    # NaN compares false both ways (and min() skips it): a NaN canary must fail, not pass as close.
    if any(math.isnan(c) for c in cosines):
        return "canary vectors differ: a canary vector is not finite (cosine NaN)"
    worst = min(cosines)
    if worst < tolerance:
        return f"canary vectors differ: lowest cosine {worst:.4f} < tolerance {tolerance}"
    return None


def check(
    produced: TensorContract,
    expected: TensorContract,
    *,
    producer: str | None = None,
    consumer: str | None = None,
    tolerance: float = DEFAULT_FINGERPRINT_TOLERANCE,
) -> list[Mismatch]:
    """Every way ``produced`` (the producer's output contract) fails ``expected`` (the consumer's
    input contract). Empty means compatible. ``producer``/``consumer`` name the two sides in each
    mismatch so a refusal says who disagrees with whom."""

    found: list[Mismatch] = []

    def add(field: str, want: Any, got: Any, message: str) -> None:
        found.append(
            Mismatch(field=field, expected=want, actual=got, message=message, producer=producer, consumer=consumer)
        )

    if produced.kind != expected.kind:
        add("kind", expected.kind, produced.kind, f"consumer was fitted on {expected.kind}, producer emits {produced.kind}")
    if produced.dim != expected.dim:
        add("dim", expected.dim, produced.dim, f"consumer expects {expected.dim}-wide vectors, producer emits {produced.dim}")
    if produced.dtype != expected.dtype:
        add("dtype", expected.dtype, produced.dtype, f"consumer was fitted on {expected.dtype}, producer computes in {produced.dtype}")
    if produced.labels != expected.labels:
        if sorted(produced.labels or []) == sorted(expected.labels or []):
            message = "same labels in another column order"
        else:
            message = "different label sets"
        add("labels", expected.labels, produced.labels, message)

    want, got = expected.space, produced.space
    if want is not None and got is None:
        add("space", want.model_id, None, "consumer was fitted in an embedding space the producer does not declare")
    elif want is None and got is not None:
        add("space", None, got.model_id, "producer declares an embedding space the consumer was not fitted in")
    elif want is not None and got is not None:
        for name in _EXACT_SPACE_FIELDS:
            a, b = getattr(want, name), getattr(got, name)
            if a != b:
                add(f"space.{name}", a, b, f"{name} differs: consumer was fitted with {a!r}, producer serves {b!r}")
        problem = _fingerprint_mismatch(want, got, tolerance)
        if problem:
            add("space.fingerprint", "canaries of the fitted space", "canaries of the served space", problem)
    return found
