"""Contracts: what a valid tensor contract is, and the model-name helper."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel, Field, ValidationError

from services.contracts import (
    CANARY_TEXTS,
    KINDS,
    MODEL_NAME_PATTERN,
    EmbeddingSpace,
    Kind,
    TensorContract,
    is_valid_model_name,
)


def space(**overrides) -> EmbeddingSpace:
    fields = dict(
        model_id="all-MiniLM-L6-v2",
        weights_sha256="53aa" + "0" * 60,
        pooling="mean",
        normalized=True,
        max_tokens=256,
        fingerprint=[[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]],
    )
    return EmbeddingSpace(**(fields | overrides))


# ---- valid contracts --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["embedding", "tokens"])
def test_vector_contract_with_space(kind: str) -> None:
    contract = TensorContract(kind=kind, dim=384, space=space())
    assert contract.kind == kind
    assert contract.dim == 384
    assert contract.dtype == "float32"  # the default
    assert contract.labels is None
    assert contract.space is not None and contract.space.model_id == "all-MiniLM-L6-v2"


def test_probabilities_contract_keeps_label_order() -> None:
    contract = TensorContract(kind="probabilities", dim=3, labels=["shipping", "billing", "account"])
    assert contract.labels == ["shipping", "billing", "account"]
    assert contract.space is None


def test_probabilities_contract_may_carry_the_encoder_space() -> None:
    # An encoder with a classification head emits probabilities in its own space.
    contract = TensorContract(kind="probabilities", dim=2, labels=["neg", "pos"], space=space())
    assert contract.space == space()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_each_declared_dtype_is_accepted(dtype: str) -> None:
    assert TensorContract(kind="embedding", dim=8, dtype=dtype).dtype == dtype


def test_space_fingerprint_defaults_to_empty() -> None:
    s = EmbeddingSpace(model_id="m", weights_sha256="x", pooling="cls", normalized=False, max_tokens=1)
    assert s.fingerprint == []


def test_contract_round_trips_through_json() -> None:
    contract = TensorContract(kind="tokens", dim=384, dtype="bfloat16", space=space())
    assert TensorContract.model_validate_json(contract.model_dump_json()) == contract
    probs = TensorContract(kind="probabilities", dim=2, labels=["b", "a"])
    assert TensorContract.model_validate(probs.model_dump()) == probs


def test_contracts_are_frozen_and_hashable_by_value() -> None:
    contract = TensorContract(kind="embedding", dim=4)
    with pytest.raises(ValidationError):
        contract.dim = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        space().pooling = "cls"  # type: ignore[misc]
    assert contract == TensorContract(kind="embedding", dim=4)


# ---- refused contracts ------------------------------------------------------------------------


def test_probabilities_without_labels_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs its labels"):
        TensorContract(kind="probabilities", dim=3)
    with pytest.raises(ValidationError, match="needs its labels"):
        TensorContract(kind="probabilities", dim=3, labels=[])


@pytest.mark.parametrize("labels", [["a", "b"], ["a", "b", "c", "d"], ["a"]])
def test_probabilities_needs_one_label_per_column(labels: list[str]) -> None:
    with pytest.raises(ValidationError, match=f"{len(labels)} labels for dim 3"):
        TensorContract(kind="probabilities", dim=3, labels=labels)


def test_probabilities_with_duplicate_labels_is_refused() -> None:
    # Two columns under one name cannot both be reported as {label: p}: one would vanish silently.
    with pytest.raises(ValidationError, match="duplicate"):
        TensorContract(kind="probabilities", dim=3, labels=["a", "b", "a"])


@pytest.mark.parametrize("kind", ["embedding", "tokens"])
def test_labels_on_vector_contracts_are_refused(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"not to {kind}"):
        TensorContract(kind=kind, dim=2, labels=["a", "b"])


def test_extra_fields_are_refused_on_contract_and_space() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TensorContract(kind="embedding", dim=4, shape=[4])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="extra"):
        TensorContract.model_validate({"kind": "embedding", "dim": 4, "space": space().model_dump() | {"revision": "x"}})


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "logits", "dim": 4},
        {"kind": "embedding", "dim": 0},
        {"kind": "embedding", "dim": -1},
        {"kind": "embedding", "dim": 4, "dtype": "float64"},
        {"kind": "embedding", "dim": 4, "dtype": "int8"},
        {"dim": 4},
        {"kind": "embedding"},
    ],
    ids=["unknown-kind", "dim-0", "dim-negative", "float64", "int8", "no-kind", "no-dim"],
)
def test_invalid_contract_fields_are_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        TensorContract.model_validate(fields)


@pytest.mark.parametrize("missing", ["model_id", "weights_sha256", "pooling", "normalized", "max_tokens"])
def test_space_requires_each_identity_field(missing: str) -> None:
    fields = space().model_dump()
    del fields[missing]
    with pytest.raises(ValidationError, match=missing):
        EmbeddingSpace.model_validate(fields)


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_space_window_must_be_positive(max_tokens: int) -> None:
    with pytest.raises(ValidationError, match="max_tokens"):
        space(max_tokens=max_tokens)


def test_kinds_tuple_matches_the_kind_literal() -> None:
    assert set(KINDS) == set(typing.get_args(Kind))
    assert len(KINDS) == len(set(KINDS))


def test_canary_texts_are_distinct_sentences() -> None:
    assert len(CANARY_TEXTS) >= 2
    assert len(set(CANARY_TEXTS)) == len(CANARY_TEXTS)
    assert all(isinstance(t, str) and t.strip() for t in CANARY_TEXTS)


# ---- model names ------------------------------------------------------------------------------

VALID_NAMES = ["a", "0", "intent", "intent-v2", "intent_v2", "9lives", "a" * 64, "a-", "a_"]
INVALID_NAMES = [
    "",
    "A",
    "Intent",
    "-intent",
    "_intent",
    "a" * 65,
    "intent v2",
    "intent/v2",
    "../etc",
    "intent.v2",
    "intent\n",
    "\nintent",
    "café",
    "intent:v2",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_model_names(name: str) -> None:
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
def test_invalid_model_names(name: str) -> None:
    assert not is_valid_model_name(name)


class _Named(BaseModel):
    name: str = Field(pattern=MODEL_NAME_PATTERN)


@pytest.mark.parametrize("name", VALID_NAMES + INVALID_NAMES, ids=repr)
def test_pattern_agrees_with_helper_in_pydantic_and_re(name: str) -> None:
    # The pattern is also used as a pydantic Field/path pattern: all three must agree.
    expected = is_valid_model_name(name)
    assert (re.fullmatch(MODEL_NAME_PATTERN, name) is not None) == expected
    try:
        _Named(name=name)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == expected
