"""How the encoder's ``nn.Linear`` layers compute: in the precision computed in, their weights reordered
once for oneDNN (as torch's own inductor does when it freezes a model for CPU inference).

bfloat16 is bfloat16 *matmuls*: only the Linear layers (about 99 % of MiniLM's FLOPs at these
lengths) hold bfloat16 weights and take bfloat16 inputs; the residual stream, the layer norms, the
embeddings and the pooling stay float32, as ``torch.autocast`` would have them. A model cast to
bfloat16 whole (every activation rounded to 8 bits of mantissa, layer after layer) kept MiniLM's
embeddings only to cosine 0.998 of float32 and changed 4 of the benchmark's 512 labels in-process;
bfloat16 matmuls over a float32 stream keep them to 0.99997, at the same speed (bench/results has
the labels the served pipelines give).

Packing. A lone sentence through MiniLM is bound by reading the weights: a plain ``F.linear`` reads
the row-major weight (float32 through MKL, which barely uses a second core at a handful of rows;
bfloat16 through oneDNN, which reorders it on every call). The reordered (blocked) layout streams
better: a lone sentence's pass is faster, and batches a little faster too. It is on by default
(``ENCODER_PREPACK=false`` serves the weights in their plain layout), and costs little memory with
MiniLM for two reasons:
- the loaded float32 weights are views of the memory-mapped safetensors file, which the embeddings
  keep mapped: once replaced, their pages are handed back (``page_out_weights``). The kernel keeps
  pages another process maps too (the benchmark's in-process limit reads the same file, so its
  memory figures still count them; a container's encoder is alone with its file);
- oneDNN keeps state for every input shape it has seen, which a trim does not return: the encoder's
  entry point bounds its caches (``encoder_service/__main__.py``).

Fusing. Where a packed Linear feeds a GELU (the intermediate layer of BERT and the models built like
it: ``dense`` then ``intermediate_act_fn``), oneDNN applies the GELU to the Linear's float32
accumulator before rounding (a post-op, as inductor fuses it): the separate GELU pass over a 1,536-wide
activation goes, and in bfloat16 the GELU is no longer computed on a rounded input. MiniLM's
bfloat16 pass of the benchmark's 512 texts: 954 ms against 1,062-1,077 unfused. Its embeddings are
as close to float32's at worst (cosine 0.99997) and a little closer on average (mean distance 1.28e-5
against 1.39e-5), though a benchmark sentence float32 labels by a 0.001 margin now tips the other way
(README, Performance).

Joining. In bfloat16, each self-attention layer's query, key and value layers (three Linear layers of
one input) are packed as one, three times as wide (``Projections``): the hidden state is rounded to
bfloat16 once instead of three times, and one wider GEMM runs instead of three. The outputs are
bit-for-bit those of three layers (each output column is the same dot product); MiniLM's bfloat16
pass of the benchmark's 512 texts in-process, interleaved: 615 texts/s against 587 (2-5 % in three
such runs). In float32 the wide layer was slower (342 against 371 texts/s), so the three stay apart.

float32 on request. A bfloat16 layer keeps its loaded float32 weight too (``Float32Weights``): a pass
run under ``in_float32()`` computes every layer from it, as the loaded model does, for the few texts
whose answer bfloat16's rounding could change (the gateway asks for them: near-ties of a pipeline's
labels, and the features a pipeline is fitted on). The weights stay views of the mapped file, out of
the process's memory but for the layer being computed: each one's pages are unmapped again after
use and stay in the file's page cache (``services.http.memory.unmap_file_pages``), so a float32
pass costs no lasting memory and reads no disk.

``torch.ops.mkldnn._linear_pointwise`` is the op inductor emits; torch is pinned, and the runtime
checks the served model against the loaded float32 one on the canaries before it serves it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers.activations import GELUActivation

from services.http.memory import page_out, unmap_file_pages, unwritten_file_ranges

# The weight layout is chosen for inputs of about this many rows (tokens of a micro-batch), between a
# lone sentence and a full micro-batch: the best of the sizes tried.
BATCH_HINT = 32


def available() -> bool:
    mkldnn = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_linear_pointwise") and hasattr(
        mkldnn, "_reorder_linear_weight"
    )


_mode = threading.local()


@contextlib.contextmanager
def in_float32() -> Iterator[None]:
    """Within, this thread's passes through served layers compute in float32 from the loaded weights."""
    _mode.float32 = True
    try:
        yield
    finally:
        _mode.float32 = False


def computing_in_float32() -> bool:
    return getattr(_mode, "float32", False)


class Float32Weights:
    """A layer's loaded float32 weight and bias, for passes asked in float32 (``in_float32``). Where
    ``map_float32_weights`` found the weight inside a file mapping this process never wrote, its pages
    are unmapped after each use (they stay in the page cache): only the layers being computed hold
    theirs resident. Elsewhere (weights loaded into memory) they stay as they are."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.nbytes = self.weight.numel() * self.weight.element_size()
        self.mapped = False

    def __call__(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        y = F.linear(x.float(), self.weight, self.bias)
        if self.mapped:
            unmap_file_pages(self.weight.data_ptr(), self.nbytes)
        return y if gelu is None else F.gelu(y, approximate=gelu)


class ServedLinear(torch.nn.Module):
    """``nn.Linear`` for inference only: computes in ``dtype`` whatever its input's (a float32 input is
    rounded on the way in; the output is in ``dtype``), its weight held in that dtype, in oneDNN's
    blocked layout when ``packed`` (and nowhere else). In a dtype other than float32 it keeps the
    loaded weights too, for passes asked in float32 (unless ``keep_float32`` is false: its caller does)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, packed: bool,
                 keep_float32: bool = True) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.dtype, self.packed = dtype, packed
        self.float32 = Float32Weights(weight, bias) if keep_float32 and dtype != torch.float32 else None
        weight = weight.detach()
        # Copies of their own, made once (the loaded weights are views of the mapped file, handed back
        # after). Plain attributes, not buffers: the packed layout is opaque, and nothing may move or save it.
        self.weight = (torch.ops.mkldnn._reorder_linear_weight(weight.to(dtype), BATCH_HINT) if packed
                       else weight.to(dtype, copy=True))
        self.bias = None if bias is None else bias.detach().to(dtype, copy=True)
        self.gelu: str | None = None  # a fused GELU's oneDNN algorithm ("none": exact), set by fuse_gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32 is not None and computing_in_float32():
            return self.float32(x, self.gelu)
        x = x.to(self.dtype)
        if self.packed:
            attr, algorithm = ("none", "") if self.gelu is None else ("gelu", self.gelu)
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dtype={self.dtype}, packed={self.packed}" + (f", gelu={self.gelu}" if self.gelu else ""))


def serve_linears(module: torch.nn.Module, dtype: torch.dtype, packed: bool) -> list[torch.nn.Linear]:
    """Replace every ``nn.Linear`` under ``module`` in place; returns the plain layers replaced."""
    replaced = []
    for name, child in list(module.named_children()):
        if type(child) is torch.nn.Linear:
            setattr(module, name, ServedLinear(child.weight, child.bias, dtype, packed))
            replaced.append(child)
        else:
            replaced += serve_linears(child, dtype, packed)
    return replaced


PROJECTIONS = ("query", "key", "value")


class Projections(torch.nn.Module):
    """The query, key and value layers of one self-attention layer as one packed Linear: the hidden
    state is rounded to bfloat16 once, not three times, and one GEMM three times as wide replaces three.
    The attention layer still calls ``query``, ``key`` and ``value`` (each a ``Projection``, a slice of
    this one's output): the first call computes all three for its input and each later call on the same
    input takes its slice. What was computed is kept per thread (the streams run micro-batches through
    the same layers at once) until each slice has been taken; a call on another input, or a second
    call for one slice, computes afresh, so any calling order gets what three separate layers give."""

    def __init__(self, linears: list[torch.nn.Linear], dtype: torch.dtype) -> None:
        super().__init__()
        biases = [linear.bias for linear in linears]
        self.float32 = [Float32Weights(linear.weight, linear.bias) for linear in linears]
        # The wide layer's weights are a copy: in float32 each projection computes from its own loaded ones.
        self.linear = ServedLinear(torch.cat([linear.weight.detach() for linear in linears]),
                                   None if biases[0] is None else torch.cat([b.detach() for b in biases]), dtype, True,
                                   keep_float32=False)
        ends = list(itertools.accumulate(linear.out_features for linear in linears))
        self.bounds = list(zip([0, *ends[:-1]], ends))
        self._computed = threading.local()

    def slice(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if computing_in_float32():
            return self.float32[index](x)
        computed = getattr(self._computed, "last", None)
        if computed is None or computed[0] is not x or index in computed[2]:
            computed = (x, self.linear(x), set())
        computed[2].add(index)
        self._computed.last = None if len(computed[2]) == len(self.bounds) else computed
        start, end = self.bounds[index]
        return computed[1][..., start:end]


class Projection(torch.nn.Module):
    """One of ``Projections``' layers, as the attention layer calls it."""

    def __init__(self, projections: Projections, index: int) -> None:
        super().__init__()
        self.projections, self.index = projections, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projections.slice(x, self.index)

    def extra_repr(self) -> str:
        return PROJECTIONS[self.index]


def fuse_projections(module: torch.nn.Module, dtype: torch.dtype) -> list[torch.nn.Linear]:
    """Make the ``query``, ``key`` and ``value`` Linear layers of each self-attention layer under
    ``module`` (BERT's names, and those of the models built like it) one packed ``Projections``; returns
    the plain layers replaced. Layers that do not take the same input width, or not all a bias, are left
    to ``serve_linears``; the canaries vet the result."""
    replaced: list[torch.nn.Linear] = []
    for layer in list(module.modules()):
        linears = [getattr(layer, name, None) for name in PROJECTIONS]
        if not all(type(linear) is torch.nn.Linear for linear in linears):
            continue
        if len({linear.in_features for linear in linears}) > 1 or len({linear.bias is None for linear in linears}) > 1:
            continue
        projections = Projections(linears, dtype)
        for index, name in enumerate(PROJECTIONS):
            setattr(layer, name, Projection(projections, index))
        replaced += linears
    return replaced


def fuse_gelu(module: torch.nn.Module) -> int:
    """Fold each intermediate layer's GELU into its packed ``dense`` layer (a oneDNN post-op); returns
    how many were folded. An intermediate layer is a transformers module named ``*Intermediate`` whose
    forward is ``intermediate_act_fn(dense(x))`` (BERT's and those copied from it); any other layout,
    activation or an unpacked layer is left as it is, and the canaries vet the result."""
    folded = 0
    for layer in module.modules():
        dense, act = getattr(layer, "dense", None), getattr(layer, "intermediate_act_fn", None)
        approximation = _gelu_approximation(act)
        if type(layer).__name__.endswith("Intermediate") and isinstance(dense, ServedLinear) and dense.packed \
                and approximation is not None:
            dense.gelu = approximation
            layer.intermediate_act_fn = torch.nn.Identity()
            folded += 1
    return folded


def _gelu_approximation(act: object) -> str | None:
    """oneDNN's name for the GELU ``act`` computes ("none": the exact erf form, BERT's ``gelu``), or
    None for any other activation (the tanh forms and the rest are left unfused)."""
    return "none" if isinstance(act, GELUActivation) and act.act is F.gelu else None


def map_float32_weights(modules: list[torch.nn.Module]) -> tuple[int, int]:
    """Find which of the float32 weights kept by the served layers under ``modules`` are views of a file
    mapping never written, whose pages can be left in the file between float32 passes; returns their
    bytes, and those of the others (resident)."""
    ranges = unwritten_file_ranges()
    kept = {id(w): w for m in modules for layer in m.modules() for w in _float32_weights(layer)}.values()
    for weights in kept:
        start = weights.weight.data_ptr()
        weights.mapped = any(low <= start and start + weights.nbytes <= high for low, high in ranges)
    mapped = sum(w.nbytes for w in kept if w.mapped)
    return mapped, sum(w.nbytes for w in kept) - mapped


def _float32_weights(layer: torch.nn.Module) -> list[Float32Weights]:
    if isinstance(layer, ServedLinear):
        return [layer.float32] if layer.float32 is not None else []
    return list(layer.float32) if isinstance(layer, Projections) else []


def page_out_weights(layers: list[torch.nn.Linear]) -> int:
    """Hand back the resident pages of the plain weights ``serve_linears`` replaced; returns the bytes
    advised. They are views of the memory-mapped weights file, which stays mapped for the other
    parameters: without this, the copy that was read to replace them stays resident beside the new one."""
    return sum(page_out(w.data_ptr(), w.numel() * w.element_size()) for w in (layer.weight for layer in layers))
