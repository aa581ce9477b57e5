"""Features against a contract, without HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from classifier_service.estimator_types import mean_pool
from classifier_service.estimators import estimators_for
from classifier_service.features import data_sha256, decode, validate
from services.codecs import Ragged
from services.errors import FeatureMismatch
from tests.classifier_service.synthetic import probabilities_contract, sequences, tokens_contract


def test_mean_pool_is_the_mean_of_each_sequence():
    features, _ = sequences(per_class=4)
    expected = np.stack([row.mean(axis=0) for row in features.rows()])
    np.testing.assert_allclose(mean_pool(features), expected, atol=1e-6)


def test_every_mismatch_is_reported_at_once():
    contract = probabilities_contract()
    features = np.array([[0.5, 0.5, 0.0], [1.2, 0.3, 0.1], [0.2, 0.2, 0.2]], np.float32)
    with pytest.raises(FeatureMismatch) as caught:
        validate(features, contract, subject="features", consumer="model 'p' version 1", max_rows=10)
    mismatches = caught.value.extra["mismatches"]
    assert [m["field"] for m in mismatches] == ["values", "row_sum"]
    assert "2 rows (1, 2)" in mismatches[1]["actual"]
    assert all(m["consumer"] == "model 'p' version 1" and m["producer"] == "request" for m in mismatches)


def test_json_tokens_decode_to_ragged_rows():
    rows = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]]
    tensor = decode(rows, tokens_contract(dim=2), subject="features", consumer="m")
    assert isinstance(tensor, Ragged) and tensor.lengths.tolist() == [2, 1]
    validate(tensor, tokens_contract(dim=2), subject="features", consumer="m", max_rows=10)


def test_data_hash_covers_values_lengths_and_labels():
    a = Ragged.from_rows([np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)])
    b = Ragged.from_rows([np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)])
    base = data_sha256(a, ["x", "y"], "tokens")
    assert base == data_sha256(a, ["x", "y"], "tokens")
    assert len({base, data_sha256(b, ["x", "y"], "tokens"), data_sha256(a, ["y", "x"], "tokens")}) == 3


def test_defaults_come_first():
    assert estimators_for("embedding")[0] == "logistic_regression"
    assert estimators_for("tokens") == ["mean_pooling", "attention_pooling", "lstm"]
    assert estimators_for("embedding", "regression") == ["ridge", "mlp_regressor"]
    assert estimators_for("tokens", "regression") == ["mean_pooling_ridge"]
    assert estimators_for("probabilities") == ["gaussian_nb", "logistic_regression"]
