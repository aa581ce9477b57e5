"""The OOD score on the sample data with the real all-MiniLM-L6-v2: held-out support texts score
lower than texts about something else (AUROC above a modest bound)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from tests.classifier_service.synthetic import classifier_client, tensor_json

pytestmark = pytest.mark.real_model

ELSEWHERE = [
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "The wave function collapses when the electron's position is measured.",
    "Entangled photons violate Bell's inequality in this experiment.",
    "The Schrödinger equation governs the time evolution of a quantum state.",
    "Hawking radiation lets black holes slowly lose mass.",
    "Photosynthesis converts light energy into chemical energy in chloroplasts.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "Add the eggs one at a time and fold in the flour gently.",
    "The striker scored twice in the second half of the final.",
    "Volcanic eruptions release sulfur dioxide into the stratosphere.",
    "The sonnet's volta turns the argument in its final couplet.",
    "Mitochondria are the site of oxidative phosphorylation.",
]


@pytest.fixture(scope="module")
def elsewhere(minilm_path):
    from tests.classifier_service.minilm import encode_intents

    return encode_intents(minilm_path, ELSEWHERE).embeddings


async def test_ood_separates_other_topics_from_held_out_support_texts(tmp_path, minilm_features, support_intents, elsewhere):
    _, labels = support_intents
    X = minilm_features.embeddings
    train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    body = {"features": tensor_json(X[train]), "labels": [labels[i] for i in train],
            "contract": minilm_features.embedding_contract.model_dump()}
    async with classifier_client(tmp_path / "models") as client:
        assert (await client.post("/v1/models/intents/fit", json=body)).status_code == 201
        inside = (await client.post("/v1/models/intents/predict", json={"features": tensor_json(X[test])})).json()
        outside = (await client.post("/v1/models/intents/predict", json={"features": tensor_json(elsewhere)})).json()
    s_in = np.array([p["ood"] for p in inside["predictions"]])
    s_out = np.array([p["ood"] for p in outside["predictions"]])
    auroc = roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out])
    print(f"\nOOD on support intents (MiniLM embeddings): held-out mean {s_in.mean():.3f}, "
          f"other topics mean {s_out.mean():.3f}, AUROC {auroc:.3f}")
    assert auroc > 0.85
    assert s_out[:4].mean() > s_in.mean() + 0.3  # the quantum-physics texts score clearly higher
    assert np.mean([p["in_distribution"] for p in inside["predictions"]]) > 0.8
