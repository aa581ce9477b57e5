"""The hardware's limit beside the services: a large GEMM's FLOP rate, and the model's FLOPs per text.

``python -m bench.hardware --precision bfloat16`` prints one JSON line, ``{"gflops": ...}``: the best
of a few timed rounds of ``torch.matmul`` (M x K by K x N, MiniLM's feed-forward shape with a batch of
tokens), in that dtype, on as many intra-op threads as the encoder uses (every core this process may
use). bench.run runs it as a subprocess, in the same run as the cells it is compared with.

``flops_per_text`` counts a BERT-style encoder's multiply-adds (x2) for one text of n tokens, from
its config:
- per layer, the Linear layers: Q, K, V and the output projection (4 h x h) and the feed-forward
  (h x i and i x h), each applied to every token: 2 n (4 h^2 + 2 h i);
- per layer, attention itself: scores Q K^T (n x n, h deep) and their product with V: 2 x 2 n^2 h.
Embedding look-ups, layer norms, softmax, GELU, pooling and biases are left out (well under 1 %).
MiniLM-L6 (h 384, i 1536, 6 layers): 21.2 MFLOP per token plus the attention terms.
"""

from __future__ import annotations

import argparse
import json
import os
import time

GEMM_SHAPE = (2048, 384, 1536)  # M (tokens), K (hidden), N (feed-forward): MiniLM's widest Linear


def flops_per_text(n_tokens: int, *, hidden: int, intermediate: int, layers: int) -> float:
    linear = 2 * n_tokens * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 4 * n_tokens * n_tokens * hidden
    return float(layers * (linear + attention))


def config_flops_per_text(config, n_tokens: int) -> float:
    """``flops_per_text`` from a transformers config (``hidden_size``, ``intermediate_size``, ``num_hidden_layers``)."""
    return flops_per_text(n_tokens, hidden=config.hidden_size, intermediate=config.intermediate_size,
                          layers=config.num_hidden_layers)


def workload_flops(model_folder: str, texts: list[str]) -> dict:
    """Mean FLOPs per text over ``texts`` at their actual token counts (no padding: useful work)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_folder, local_files_only=True)
    counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    per_text = [config_flops_per_text(config, n) for n in counts]
    return {"flops_per_text": sum(per_text) / len(per_text), "mean_tokens": sum(counts) / len(counts),
            "flops_per_token_linear": config_flops_per_text(config, 1) - 4 * config.hidden_size * config.num_hidden_layers}


def gemm_gflops(precision: str, threads: int, *, rounds: int = 5, seconds: float = 0.3) -> float:
    import torch

    torch.set_num_threads(threads)
    m, k, n = GEMM_SHAPE
    dtype = getattr(torch, precision)
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        torch.matmul(a, b)  # warm-up: the kernel is built, the pages touched
    best = 0.0
    for _ in range(rounds):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            torch.matmul(a, b)
            calls += 1
        best = max(best, 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(json.dumps({"gflops": gemm_gflops(args.precision, args.threads), "threads": args.threads,
                      "shape": GEMM_SHAPE, "precision": args.precision}))


if __name__ == "__main__":
    main()
