"""float32 ``nn.Linear`` layers with their weights reordered once for oneDNN, as torch's own inductor
does when it freezes a model for CPU inference.

A lone sentence through MiniLM is bound by reading the weights (more than the cache holds in
float32): a plain ``F.linear`` reads the row-major weight through MKL, which barely uses a second core
at a handful of rows. The reordered (blocked) layout streams better: a lone sentence's pass is faster,
and batches a little faster too.
bfloat16 already takes oneDNN's path and gains nothing, so only float32 is packed (bfloat16 is loaded
straight in bfloat16, and its own oneDNN caches are bounded by the entry point too).

It is on by default (``ENCODER_PREPACK=false`` turns it off), and costs little memory with MiniLM
for two reasons:
- the plain weights are views of the memory-mapped safetensors file, which the embeddings keep
  mapped: once packed, their pages are handed back (``page_out_weights``). The kernel keeps pages
  another process maps too (the benchmark's in-process limit reads the same file, so its memory
  figures still count them; a container's encoder is alone with its file);
- oneDNN keeps state for every input shape it has seen, which a trim does not return: the encoder's
  entry point bounds its caches where weights are packed (``encoder_service/__main__.py``).

``torch.ops.mkldnn._linear_pointwise`` is the op inductor emits; torch is pinned, and the runtime
checks the packed model against the plain one on the canaries before it serves it.
"""

from __future__ import annotations

import torch

from services.http.memory import page_out

# The weight layout is chosen for inputs of about this many rows (tokens of a micro-batch), between a
# lone sentence and a full micro-batch: the best of the sizes tried.
BATCH_HINT = 32


def available() -> bool:
    mkldnn = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_linear_pointwise") and hasattr(
        mkldnn, "_reorder_linear_weight"
    )


class PackedLinear(torch.nn.Module):
    """``nn.Linear`` for inference only, its weight held in oneDNN's blocked layout (and nowhere else)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Plain attributes, not buffers: the layout is opaque, and nothing may move or save it.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), BATCH_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    """Replace every float32 ``nn.Linear`` under ``module`` in place; returns the plain layers replaced."""
    replaced = []
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
            setattr(module, name, PackedLinear(child))
            replaced.append(child)
        else:
            replaced += pack_linears(child)
    return replaced


def page_out_weights(layers: list[torch.nn.Linear]) -> int:
    """Hand back the resident pages of the plain weights ``pack_linears`` replaced; returns the bytes
    advised. They are views of the memory-mapped weights file, which stays mapped for the other
    parameters: without this, the copy that packing read stays resident beside the packed one."""
    return sum(page_out(w.data_ptr(), w.numel() * w.element_size()) for w in (layer.weight for layer in layers))
