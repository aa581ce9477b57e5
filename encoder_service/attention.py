"""Attention that never sees padding: a text's vectors do not depend on what it was batched with.

A padded batch computes each text's attention over the batch's widest length, its padding masked out.
The masked keys weigh exactly nothing, but the kernel blocks and sums differently for each width, so
the result moves in its last bits; in bfloat16 those bits are rounded into the next Linear layer's
input and grow, layer after layer: MiniLM's embedding of one text moved by up to 1.1e-3 between
batchings of the same texts, which is enough to change a label float32 decides by less (the
benchmark saw 3 of 512 move between two runs). So each run of texts of one length in a micro-batch
(they come length-sorted) gets its own call, at that length and with no mask: in bfloat16 a text's
vectors are then bit-for-bit the same alone, in any batch, in any run (in float32 they already
agreed to ~1e-7, and still do: float32's GEMM picks another kernel for a single row).

Attention itself computes in float32 whatever the Linear layers compute in: it is about 1 % of
MiniLM's FLOPs at sentence lengths, but torch's fused bfloat16 kernel rounds the attention weights
before their sum with the values (5e-3 off float32 on MiniLM's shapes), and on a sentence's few
tokens three plain float32 kernels beat it: 1.0-1.1 ms against 1.4-1.5 ms per layer for 24 texts of
20-22 tokens on one thread. On the benchmark's 512 texts, in-process, bfloat16's logistic-regression
labels then differ from float32's on 1 text (float32's top-two margin 0.0004) instead of 3 (0.001).

Registered with transformers' attention interface as ``seam_exact``; the runtime switches a model to
it where the model supports the interface (``use_exact``), and the canary check vets the result. A
mask that is not a key-padding mask (a causal one, say) is handed to plain SDPA unchanged.
"""

from __future__ import annotations

import itertools
import logging

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

log = logging.getLogger("seam.encoder")

NAME = "seam_exact"
# Plain attention holds its scores (heads x length x length per text, float32): at most this many at
# once (16 MB). A run of texts is attended a few at a time to stay under it, and a text whose scores
# alone exceed it (a long window) goes to torch's fused float32 kernel, which never holds them. Which
# way a text goes depends on its length only, so its vectors still do not depend on its batch.
SCORES_BUDGET = 4 * 1024 * 1024


def exact_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: ``query``/``key``/``value`` are [batch, heads, length, dim],
    ``attention_mask`` None or boolean [batch, 1, length, length] (True: attend); returns
    [batch, length, heads, dim]. Rows past a text's length (padding) come back as zeros. Anything but
    a bidirectional self-attention over padded texts (causal, dropout, grouped keys, another mask)
    goes to transformers' own SDPA attention, unchanged."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = not causal and not dropout and key.shape[1] == query.shape[1] and key.shape[2] == query.shape[2]
    lengths = _padded_lengths(attention_mask, key.shape[0], key.shape[2]) if plain else None
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    # float32, contiguous, once: each run below is then a view of them (no copy per run).
    query, key, value = (t.to(torch.float32, memory_format=torch.contiguous_format) for t in (query, key, value))
    query = query * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3])  # [batch, length, heads, dim]
    start = 0
    for n, run in itertools.groupby(lengths):
        end = start + len(list(run))
        texts = SCORES_BUDGET // (query.shape[1] * n * n)  # texts whose scores fit the budget at once
        for first in range(start, end, max(texts, 1)):
            last = min(end, first + texts) if texts else first + 1
            q, k, v = query[first:last, :, :n], key[first:last, :, :n], value[first:last, :, :n]
            attended = _attend(q, k, v) if texts else F.scaled_dot_product_attention(q, k, v, scale=1.0)
            out[first:last, :n] = attended.transpose(1, 2)
        start = end
    return out, None


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Softmax attention without a mask, its scale already in ``query``, in float32: the scores, their
    softmax and the weighted sum are never rounded to bfloat16 (torch's bfloat16 SDPA rounds the
    weights before the sum: 5e-3 off float32 on MiniLM's shapes, against 1e-6 here), and for a
    sentence's few tokens plain kernels are faster than the fused one."""
    return torch.matmul(torch.matmul(query, key.transpose(-1, -2)).softmax(dim=-1), value)


def _padded_lengths(mask: torch.Tensor | None, batch: int, width: int) -> list[int] | None:
    """Each row's length when ``mask`` only masks trailing keys (padding); None when it masks
    anything else (then the mask is applied as given)."""
    if mask is None:  # nothing masked: every row is the full width
        return [width] * batch
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (width, width):
        return None
    keys = mask[:, 0, 0, :]
    lengths = keys.sum(dim=-1)
    prefix = torch.arange(width) < lengths[:, None]
    if not torch.equal(keys, prefix) or not torch.equal(mask, keys[:, None, None, :].expand_as(mask)):
        return None
    return lengths.tolist()


def use_exact(model: torch.nn.Module) -> None:
    """Switch a transformers model's attention to ``exact_attention``; where the model does not take a
    registered attention implementation, its own is kept and the log says so."""
    AttentionInterface.register(NAME, exact_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)
    except (AttributeError, ValueError, ImportError) as exc:
        log.warning("%s takes no registered attention implementation (%s): a text's vectors may move in their "
                    "last bits with what it is batched with", type(model).__name__, exc)
