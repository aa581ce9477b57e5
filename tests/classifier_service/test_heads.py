"""The attention-pooling head: deterministic, blind to padding, exact through safetensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from classifier_service.heads import CONFIG_FILE, WEIGHTS_FILE, AttentionPoolingClassifier, HeadParams
from services.codecs import Ragged
from tests.classifier_service.synthetic import CLASSES, sequences

FAST = HeadParams(max_epochs=15)


@pytest.fixture(scope="module")
def data() -> tuple[Ragged, np.ndarray]:
    features, labels = sequences(per_class=10)
    return features, np.array(labels)


@pytest.fixture(scope="module")
def head(data) -> AttentionPoolingClassifier:
    return AttentionPoolingClassifier(FAST).fit(*data)


def test_fixed_seed_gives_the_same_head_and_leaves_global_state_alone(data, head):
    rng_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    again = AttentionPoolingClassifier(FAST).fit(*data)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    for (name, a), (_, b) in zip(head.module.state_dict().items(), again.module.state_dict().items()):
        assert torch.equal(a, b), name
    other = AttentionPoolingClassifier(HeadParams(max_epochs=15, seed=1)).fit(*data)
    assert not torch.equal(other.module.out.weight, head.module.out.weight)


def test_padding_never_counts(data, head):
    features, _ = data
    together = head.predict_proba(features)  # padded to the longest sequence
    alone = np.concatenate([head.predict_proba(Ragged.from_rows([row])) for row in features.rows()])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert list(head.classes_) == sorted(CLASSES)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-9)


def test_early_stopping_on_a_held_out_split(data):
    features, labels = data
    noisy = labels.copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(noisy)) < 0.4
    noisy[flip] = rng.choice(sorted(CLASSES), flip.sum())
    report = AttentionPoolingClassifier(HeadParams(max_epochs=500, patience=3)).fit(features, noisy).fit_report
    assert report["early_stopping"] and report["epochs"] < 500
    assert report["best_epoch"] == report["epochs"] - 3 and report["holdout_size"] >= 3


def test_too_few_examples_for_a_split_trains_without_one():
    features = Ragged.from_rows([np.eye(4, dtype=np.float32)[:2], np.eye(4, dtype=np.float32)[2:]])
    head = AttentionPoolingClassifier(HeadParams(max_epochs=3)).fit(features, np.array(["a", "b"]))
    assert head.fit_report["early_stopping"] is False and head.fit_report["epochs"] == 3


def test_safetensors_round_trip_is_exact(tmp_path, data, head):
    head.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["classes"] == sorted(CLASSES)
    loaded = AttentionPoolingClassifier.load(tmp_path)
    assert loaded.params == FAST
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), head.predict_proba(data[0]))


def test_load_refuses_what_is_not_a_head(tmp_path, head):
    head.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, "dim": config["dim"] + 1}))
    with pytest.raises(ValueError, match="weights do not fit"):
        AttentionPoolingClassifier.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(ValueError, match="not an attention-pooling head"):
        AttentionPoolingClassifier.load(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).exists()
