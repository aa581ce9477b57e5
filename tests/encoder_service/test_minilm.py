"""The real all-MiniLM-L6-v2: parity with sentence-transformers and the properties the seam relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from services.contracts import CANARY_TEXTS
from tests.encoder_service import encode

pytestmark = pytest.mark.real_model

TEXTS = [
    "Where is my parcel? It should have arrived yesterday.",
    "Refund please",
    "I was charged twice for the same invoice and nobody answers my emails, which is frustrating.",
    "hi",
]


@pytest.fixture(scope="module")
def reference(minilm_path) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_path), device="cpu", local_files_only=True)


def test_embedding_equals_sentence_transformers_encode(minilm_runtime, reference):
    ours = np.stack(encode(minilm_runtime, TEXTS, "embedding"))
    theirs = reference.encode(TEXTS)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # Normalize module honoured


def test_contracts_describe_minilm(minilm_runtime):
    embedding = minilm_runtime.output("embedding").contract
    tokens = minilm_runtime.output("tokens").contract
    assert (embedding.kind, embedding.dim, embedding.dtype) == ("embedding", 384, "float32")
    assert (tokens.kind, tokens.dim) == ("tokens", 384)
    space = embedding.space
    assert space.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (space.pooling, space.normalized, space.max_tokens) == ("mean", True, 256)
    assert len(space.weights_sha256) == 64
    assert len(space.fingerprint) == len(CANARY_TEXTS) and len(space.fingerprint[0]) == 384
    assert "probabilities" not in minilm_runtime.outputs


def test_masked_mean_of_tokens_is_the_unnormalised_embedding(minilm_runtime, reference):
    tokens = encode(minilm_runtime, TEXTS, "tokens")
    ref_tokens = reference.encode(TEXTS, output_value="token_embeddings")
    for ours, theirs, text in zip(tokens, ref_tokens, TEXTS):
        assert ours.shape == (len(theirs), 384), text  # padding excluded: one vector per real token
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
    means = np.stack([t.mean(axis=0) for t in tokens])
    normalised = means / np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(normalised, np.stack(encode(minilm_runtime, TEXTS, "embedding")), atol=1e-5)


def test_output_does_not_depend_on_the_rest_of_the_batch(minilm_runtime):
    short = "Refund please"
    alone_tokens = encode(minilm_runtime, [short], "tokens")[0]
    alone_embedding = encode(minilm_runtime, [short], "embedding")[0]
    crowd = [short, TEXTS[2] * 3, TEXTS[0]]
    with_others_tokens = encode(minilm_runtime, crowd, "tokens")[0]
    with_others_embedding = encode(minilm_runtime, crowd, "embedding")[0]
    assert with_others_tokens.shape == alone_tokens.shape
    np.testing.assert_allclose(with_others_tokens, alone_tokens, atol=1e-5)
    np.testing.assert_allclose(with_others_embedding, alone_embedding, atol=1e-5)


def test_plain_mean_over_padding_would_depend_on_the_batch(minilm_runtime):
    """The failure seam avoids: `.mean(dim=1)` over a padded batch changes with its neighbours."""
    short, long = "Refund please", TEXTS[2] * 3
    st = minilm_runtime._st
    def naive(batch):
        features = st.preprocess(batch)
        with torch.inference_mode():
            return st.forward(dict(features))["token_embeddings"].mean(dim=1)[0].numpy()
    alone, padded = naive([short]), naive([short, long])
    assert np.abs(alone - padded).max() > 1e-2  # same text, different vector: the bug
    tokens = encode(minilm_runtime, [short], "tokens")[0]
    np.testing.assert_allclose(tokens.mean(axis=0), alone, atol=1e-5)  # seam's masked mean = the unpadded mean


def test_long_texts_are_truncated_and_flagged(minilm_runtime):
    long = "parcel " * 400
    items = minilm_runtime.tokenize([long, "short text"])
    assert [i.truncated for i in items] == [True, False]
    assert items[0].n_tokens == 256
    assert encode(minilm_runtime, [long], "tokens")[0].shape == (256, 384)


async def test_encode_over_http_matches_sentence_transformers(reference):
    from tests.support import encoder_client

    async with encoder_client() as client:
        r = await client.post("/v1/encode", json={"texts": TEXTS + ["parcel " * 400], "output": "embedding"})
    assert r.status_code == 200
    body = r.json()
    np.testing.assert_allclose(np.array(body["data"]), reference.encode(TEXTS + ["parcel " * 400]), atol=1e-5)
    assert body["truncated"] == [False, False, False, False, True]
    assert body["token_counts"][-1] == 256
    assert r.headers["x-seam-contract"] == body["contract_id"]


@pytest.mark.skipif(not __import__("encoder_service.runtime").runtime.bfloat16_supported(), reason="CPU without bfloat16")
def test_bfloat16_is_declared_and_close_to_float32(minilm_runtime):
    from encoder_service.runtime import EncoderRuntime
    from encoder_service.settings import EncoderSettings
    from services.compatibility import check

    bf16 = EncoderRuntime(EncoderSettings(precision="bfloat16"))
    bf16.load()
    a = np.stack(encode(minilm_runtime, TEXTS))
    b = np.stack(encode(bf16, TEXTS))
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.min() >= 0.999
    produced, expected = bf16.output("embedding").contract, minilm_runtime.output("embedding").contract
    assert produced.dtype == "bfloat16"
    # same space by fingerprint; only the declared dtype differs, so the gateway sees what is served
    assert [m.field for m in check(produced, expected)] == ["dtype"]
