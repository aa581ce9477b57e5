"""float32 ``nn.Linear`` layers with their weights reordered once for oneDNN, as torch's own inductor
does when it freezes a model for CPU inference.

A lone sentence through MiniLM is bound by reading the weights (90 MB in float32, more than the
cache): a plain ``F.linear`` reads the row-major weight through MKL, which on this hardware barely
uses a second core at a handful of rows. The reordered (blocked) layout streams better: a lone
sentence's pass drops from about 10 to 7 ms, and batches of 32 run a few per cent faster.
bfloat16 already takes oneDNN's path and gains nothing, so only float32 is packed.

It costs memory, so it is opt-in (``ENCODER_PREPACK=true``): with MiniLM the encoder's peak resident
memory under load went from 626 to 748 MB. The plain weights' pages of the memory-mapped
safetensors file stay resident (the embeddings keep the mapping alive), and oneDNN keeps state for
every input shape it has seen, which a trim does not return.

``torch.ops.mkldnn._linear_pointwise`` is the op inductor emits; torch is pinned, and the runtime
checks the packed model against the plain one on the canaries before it serves it.
"""

from __future__ import annotations

import torch

# The weight layout is chosen for inputs of about this many rows (tokens of a micro-batch): from a
# lone sentence (~15) to a full micro-batch (512), 16 to 32 measured best.
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


def pack_linears(module: torch.nn.Module) -> int:
    """Replace every float32 ``nn.Linear`` under ``module`` in place; returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
            setattr(module, name, PackedLinear(child))
            count += 1
        else:
            count += pack_linears(child)
    return count
