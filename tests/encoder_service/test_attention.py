"""Attention that never sees padding (encoder_service/attention.py): in bfloat16 a text's vectors are
bit-for-bit the same alone and in any batch (in float32 to float32's own last digits: its GEMM picks
another kernel for a single row); masks other than key padding are applied as given."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder_service import attention
from encoder_service.runtime import EncoderRuntime
from encoder_service.settings import EncoderSettings

SELF_ATTENTION = SimpleNamespace(is_causal=False)  # what a BERT layer's attention module says of itself
TEXTS = ["hi", "Where is my parcel? It should have arrived yesterday.", "a b c d e f", "refund please",
         "the invoice shows a charge I do not recognise at all, can you look into it", "ok"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_classifier"])
def test_a_texts_outputs_do_not_depend_on_its_batch(fixture, precision, request):
    runtime = EncoderRuntime(EncoderSettings(model=str(request.getfixturevalue(fixture)), precision=precision))
    runtime.load()
    try:
        assert runtime._st[0].auto_model.config._attn_implementation == attention.NAME
        items = runtime.tokenize(TEXTS)
        assert len({item.n_tokens for item in items}) > 3  # a batch of them is padded
        outputs = sorted(runtime.outputs)
        together = runtime.submit(items, outputs).result()
        for i, item in enumerate(items):
            alone = runtime.submit([item], outputs).result()[0]
            pair = runtime.submit([items[-1 - i], item], outputs).result()[1]
            for name in outputs:
                for got in (alone[name], pair[name]):
                    if precision == "bfloat16":
                        assert np.array_equal(got, together[i][name]), (name, i)
                    else:
                        np.testing.assert_allclose(got, together[i][name], rtol=0, atol=1e-5, err_msg=f"{name} {i}")
    finally:
        runtime.close()


def _qkv(batch=3, heads=2, width=5, dim=4):
    torch.manual_seed(0)
    return [torch.randn(batch, heads, width, dim) for _ in range(3)]


def test_key_padding_is_computed_per_length_and_gives_what_the_masked_call_gives():
    q, k, v = _qkv()
    lengths = torch.tensor([5, 3, 3])
    mask = (torch.arange(5) < lengths[:, None])[:, None, None, :].expand(3, 1, 5, 5)
    assert attention._padded_lengths(mask, 3, 5) == [5, 3, 3]
    out, _ = attention.exact_attention(SELF_ATTENTION, q, k, v, mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :n], reference[b, :n])
        assert not out[b, n:].any()  # padding rows: zeros, never read


def test_any_other_mask_is_applied_as_given():
    q, k, v = _qkv()
    causal = torch.ones(5, 5, dtype=torch.bool).tril().expand(3, 1, 5, 5)
    assert attention._padded_lengths(causal, 3, 5) is None
    out, _ = attention.exact_attention(SELF_ATTENTION, q, k, v, causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=causal).transpose(1, 2))
    holes = torch.tensor([True, False, True, True, True])[None, None, None, :].expand(3, 1, 5, 5)
    assert attention._padded_lengths(holes, 3, 5) is None
    # A module that may be causal (or does not say) never takes the per-length path.
    lengths = torch.tensor([5, 3, 3])
    padding = (torch.arange(5) < lengths[:, None])[:, None, None, :].expand(3, 1, 5, 5)
    out, _ = attention.exact_attention(SimpleNamespace(is_causal=True), q, k, v, padding)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=padding).transpose(1, 2))


def test_bfloat16_inputs_are_attended_in_float32():
    q, k, v = (t.to(torch.bfloat16) for t in _qkv(width=7, dim=16))
    out, _ = attention.exact_attention(SELF_ATTENTION, q, k, v, None)
    assert out.dtype == torch.float32
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).transpose(1, 2)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)  # torch's own bfloat16 kernel: 5e-3 off


@pytest.mark.parametrize("budget", [attention.SCORES_BUDGET, 2 * 2 * 5 * 5, 1])  # all at once, two texts at a time, fused
def test_the_scores_held_at_once_are_bounded_and_change_nothing(budget, monkeypatch):
    monkeypatch.setattr(attention, "SCORES_BUDGET", budget)
    q, k, v = _qkv(batch=5)
    lengths = torch.tensor([5, 5, 5, 3, 3])
    mask = (torch.arange(5) < lengths[:, None])[:, None, None, :].expand(5, 1, 5, 5)
    out, _ = attention.exact_attention(SELF_ATTENTION, q, k, v, mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :n], reference[b, :n])
        alone, _ = attention.exact_attention(SELF_ATTENTION, q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n], None)
        assert torch.equal(alone[0], out[b, :n])  # the same path alone as in the batch
