"""The compatibility check, field by field: check(produced, expected) -> every Mismatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from services.compatibility import DEFAULT_FINGERPRINT_TOLERANCE, Mismatch, check
from services.contracts import CANARY_TEXTS, EmbeddingSpace, TensorContract

DIM = 384
SPACE_FIELDS = {
    "model_id": "paraphrase-MiniLM-L3-v2",
    "weights_sha256": "ff" * 32,
    "pooling": "cls",
    "normalized": False,
    "max_tokens": 128,
}


def canaries(seed: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors standing in for one encoder's canary embeddings (one per canary text)."""
    vectors = np.random.default_rng(seed).standard_normal((len(CANARY_TEXTS), dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 precision -> float32: keep sign, exponent and the top 7 mantissa bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def space(fingerprint: np.ndarray | list | None = None, **overrides) -> EmbeddingSpace:
    fp = canaries(0) if fingerprint is None else fingerprint
    fields = dict(
        model_id="all-MiniLM-L6-v2",
        weights_sha256="53aa" * 16,
        pooling="mean",
        normalized=True,
        max_tokens=256,
        fingerprint=np.asarray(fp, dtype=np.float64).tolist(),
    )
    return EmbeddingSpace(**(fields | overrides))


def contract(kind: str = "embedding", dim: int = DIM, **overrides) -> TensorContract:
    fields: dict = dict(kind=kind, dim=dim, space=space())
    return TensorContract(**(fields | overrides))


def fields_of(found: list[Mismatch]) -> list[str]:
    return [m.field for m in found]


def only(found: list[Mismatch]) -> Mismatch:
    assert len(found) == 1, found
    return found[0]


# ---- compatible -------------------------------------------------------------------------------


def test_identical_contracts_are_compatible() -> None:
    assert check(contract(), contract()) == []
    assert check(contract("tokens"), contract("tokens")) == []


def test_probabilities_without_space_are_compatible() -> None:
    probs = TensorContract(kind="probabilities", dim=3, labels=["a", "b", "c"])
    assert check(probs, probs) == []


def test_default_tolerance() -> None:
    assert DEFAULT_FINGERPRINT_TOLERANCE == 0.999


# ---- fingerprints -----------------------------------------------------------------------------


def test_bfloat16_rounding_changes_the_vectors_but_keeps_cosine_above_tolerance() -> None:
    fitted = canaries(0)
    served = to_bfloat16(fitted)
    assert (served.view(np.uint32) & 0xFFFF == 0).all()  # really bfloat16-representable
    assert not np.array_equal(served, fitted)  # and really different from float32
    assert np.abs(served - fitted).max() > 1e-4
    assert cosines(fitted, served).min() >= DEFAULT_FINGERPRINT_TOLERANCE


def test_bfloat16_run_of_the_same_model_passes() -> None:
    fitted = contract(space=space(canaries(0)))
    served = contract(space=space(to_bfloat16(canaries(0))))
    assert check(served, fitted) == []
    # The other direction as well: a consumer fitted on bfloat16 features, a float32 producer.
    assert check(fitted, served) == []


def test_bfloat16_run_that_declares_its_dtype_differs_only_in_dtype() -> None:
    fitted = contract(space=space(canaries(0)))
    served = contract(dtype="bfloat16", space=space(to_bfloat16(canaries(0))))
    m = only(check(served, fitted))
    assert (m.field, m.expected, m.actual) == ("dtype", "float32", "bfloat16")


def test_different_model_of_the_same_width_under_the_same_name_fails() -> None:
    # A swapped encoder that claims the same name and hash: only the canaries can tell.
    other = canaries(1)
    assert cosines(canaries(0), other).max() < 0.5
    m = only(check(contract(space=space(other)), contract()))
    assert m.field == "space.fingerprint"
    assert "lowest cosine" in m.message and "0.999" in m.message
    assert m.expected != m.actual


def test_different_model_of_the_same_width_reports_name_hash_and_canaries() -> None:
    produced = contract(space=space(canaries(1), model_id="other-model", weights_sha256="ee" * 32))
    found = check(produced, contract())
    assert fields_of(found) == ["space.model_id", "space.weights_sha256", "space.fingerprint"]
    assert found[0].expected == "all-MiniLM-L6-v2" and found[0].actual == "other-model"


def test_fine_tuned_encoder_below_tolerance_fails_but_a_looser_tolerance_accepts_it() -> None:
    rng = np.random.default_rng(7)
    fitted = canaries(0)
    tuned = fitted + 0.1 * rng.standard_normal(fitted.shape).astype(np.float32) / math.sqrt(DIM)
    worst = cosines(fitted, tuned).min()
    assert 0.99 < worst < DEFAULT_FINGERPRINT_TOLERANCE
    assert fields_of(check(contract(space=space(tuned)), contract())) == ["space.fingerprint"]
    assert check(contract(space=space(tuned)), contract(), tolerance=0.99) == []


def test_a_single_bad_canary_is_enough_to_fail() -> None:
    served = canaries(0).copy()
    served[-1] = canaries(1)[-1]
    assert fields_of(check(contract(space=space(served)), contract())) == ["space.fingerprint"]


def test_fingerprint_scale_does_not_matter() -> None:
    # Cosine, not distance: an unnormalised copy of the same directions is the same space.
    assert check(contract(space=space(canaries(0) * 3.0)), contract()) == []


@pytest.mark.parametrize(
    "served",
    [canaries(0)[:-1], canaries(0, dim=DIM // 2)],
    ids=["fewer-canaries", "narrower-canaries"],
)
def test_fingerprints_of_other_count_or_width_fail(served: np.ndarray) -> None:
    m = only(check(contract(space=space(served)), contract()))
    assert m.field == "space.fingerprint"
    assert "counts or widths" in m.message


@pytest.mark.parametrize("side", ["produced", "expected"])
def test_missing_fingerprint_on_one_side_is_not_compared(side: str) -> None:
    bare = contract(space=space([]))
    produced, expected = (bare, contract()) if side == "produced" else (contract(), bare)
    assert check(produced, expected) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("side", ["produced", "expected"])
def test_non_finite_fingerprint_fails(bad: float, side: str) -> None:
    # A broken encoder (e.g. float16 overflow) yields NaN/inf canaries; they must never pass as
    # "close", whichever canary holds them (min() would skip a NaN that is not first).
    for row in range(len(CANARY_TEXTS)):
        broken = canaries(0).copy()
        broken[row, 0] = bad
        produced, expected = contract(space=space(broken)), contract()
        if side == "expected":
            produced, expected = expected, produced
        m = only(check(produced, expected))
        assert m.field == "space.fingerprint", row
        assert "not finite" in m.message


def test_zero_canaries_match_only_zero_canaries() -> None:
    zeros = np.zeros((len(CANARY_TEXTS), DIM))
    assert check(contract(space=space(zeros)), contract(space=space(zeros))) == []
    assert fields_of(check(contract(space=space(zeros)), contract())) == ["space.fingerprint"]


# ---- kind, dim, dtype, labels -----------------------------------------------------------------


def test_pooled_vectors_fed_to_a_sequence_model() -> None:
    m = only(check(contract("embedding"), contract("tokens")))
    assert (m.field, m.expected, m.actual) == ("kind", "tokens", "embedding")
    assert "tokens" in m.message and "embedding" in m.message


def test_token_sequences_fed_to_a_pooled_model() -> None:
    m = only(check(contract("tokens"), contract("embedding")))
    assert (m.field, m.expected, m.actual) == ("kind", "embedding", "tokens")


def test_dimension_mismatch() -> None:
    m = only(check(contract(dim=384), contract(dim=768)))
    assert (m.field, m.expected, m.actual) == ("dim", 768, 384)
    assert "768" in m.message and "384" in m.message


def test_dtype_mismatch() -> None:
    m = only(check(contract(dtype="float16"), contract(dtype="float32")))
    assert (m.field, m.expected, m.actual) == ("dtype", "float32", "float16")


def test_labels_in_another_order() -> None:
    produced = TensorContract(kind="probabilities", dim=3, labels=["shipping", "billing", "account"])
    expected = TensorContract(kind="probabilities", dim=3, labels=["billing", "shipping", "account"])
    m = only(check(produced, expected))
    assert m.field == "labels"
    assert m.expected == ["billing", "shipping", "account"]
    assert m.actual == ["shipping", "billing", "account"]
    assert "order" in m.message


def test_different_label_sets() -> None:
    produced = TensorContract(kind="probabilities", dim=2, labels=["neg", "pos"])
    expected = TensorContract(kind="probabilities", dim=2, labels=["billing", "shipping"])
    m = only(check(produced, expected))
    assert (m.field, m.expected, m.actual) == ("labels", ["billing", "shipping"], ["neg", "pos"])
    assert "different label sets" in m.message


def test_probabilities_fed_to_an_embedding_model() -> None:
    produced = TensorContract(kind="probabilities", dim=3, labels=["a", "b", "c"])
    expected = TensorContract(kind="embedding", dim=3)
    assert fields_of(check(produced, expected)) == ["kind", "labels"]


# ---- embedding space ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPACE_FIELDS))
def test_each_space_field(name: str) -> None:
    produced = contract(space=space(**{name: SPACE_FIELDS[name]}))
    m = only(check(produced, contract()))
    assert m.field == f"space.{name}"
    assert m.expected == getattr(contract().space, name)
    assert m.actual == SPACE_FIELDS[name]
    assert name in m.message


def test_producer_without_space() -> None:
    m = only(check(contract(space=None), contract()))
    assert (m.field, m.expected, m.actual) == ("space", "all-MiniLM-L6-v2", None)


def test_consumer_without_space() -> None:
    m = only(check(contract(), contract(space=None)))
    assert (m.field, m.expected, m.actual) == ("space", None, "all-MiniLM-L6-v2")


# ---- several at once, both sides named ----------------------------------------------------------


def test_every_mismatch_is_reported_not_just_the_first() -> None:
    produced = contract(
        "tokens",
        dim=768,
        dtype="bfloat16",
        space=space(canaries(1, dim=DIM), **SPACE_FIELDS),
    )
    found = check(produced, contract("embedding", dim=DIM))
    assert fields_of(found) == [
        "kind",
        "dim",
        "dtype",
        *(f"space.{name}" for name in SPACE_FIELDS),
        "space.fingerprint",
    ]
    by_field = {m.field: m for m in found}
    assert (by_field["kind"].expected, by_field["kind"].actual) == ("embedding", "tokens")
    assert (by_field["dim"].expected, by_field["dim"].actual) == (DIM, 768)
    assert (by_field["dtype"].expected, by_field["dtype"].actual) == ("float32", "bfloat16")
    for name, value in SPACE_FIELDS.items():
        assert by_field[f"space.{name}"].actual == value


def test_kind_dim_labels_and_missing_space_together() -> None:
    produced = TensorContract(kind="probabilities", dim=3, labels=["c", "b", "a"])
    expected = contract("embedding", dim=4)
    assert fields_of(check(produced, expected)) == ["kind", "dim", "labels", "space"]


def test_producer_and_consumer_are_named_in_every_mismatch() -> None:
    produced = contract("tokens", dim=768, space=space(model_id="x"))
    found = check(produced, contract(), producer="encoder:embedding", consumer="intent@3")
    assert len(found) == 3
    for m in found:
        assert m.producer == "encoder:embedding"
        assert m.consumer == "intent@3"


def test_sides_default_to_none() -> None:
    m = only(check(contract(dim=8), contract()))
    assert m.producer is None and m.consumer is None


def test_mismatch_is_frozen_and_serialises_for_problem_json() -> None:
    m = only(check(contract(dim=8), contract(), producer="p", consumer="c"))
    dumped = m.model_dump(mode="json")
    assert set(dumped) == {"field", "expected", "actual", "message", "producer", "consumer"}
    assert Mismatch.model_validate_json(m.model_dump_json()) == m
    with pytest.raises(ValidationError):
        m.field = "kind"  # type: ignore[misc]


def test_check_does_not_modify_its_inputs() -> None:
    produced, expected = contract(space=space(canaries(1))), contract("tokens")
    before = (produced.model_dump(), expected.model_dump())
    check(produced, expected, producer="p", consumer="c")
    assert (produced.model_dump(), expected.model_dump()) == before
