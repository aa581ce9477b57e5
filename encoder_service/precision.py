"""``ENCODER_PRECISION=auto``: bfloat16 where the CPU computes it natively, float32 elsewhere.

Torch-free, so the entry point can resolve it before torch reads its library settings
(``encoder_service/__main__.py``).

"Natively" is read from the CPU's flags (``/proc/cpuinfo``): ``avx512_bf16`` (AVX512-BF16, Cooper
Lake, Zen 4 and later) or ``amx_bf16`` (AMX, Sapphire Rapids and later) give bfloat16 dot products
in hardware. torch's own test (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not the one to
read: it answers yes on any AVX-512 core (Skylake-X included), where oneDNN emulates bfloat16 by
converting to float32 and back, slower than float32 itself. Native bfloat16 is much faster than
float32 for MiniLM, at the same served space (bench/results and the README have the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision the encoder computes in, and why (the log says it at load)."""

    precision: str  # "float32" or "bfloat16"
    reason: str


def read_cpu_flags(path: Path = CPUINFO) -> frozenset[str] | None:
    """The flags of the first CPU listed in ``path``; None where there is no such file (not Linux)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    return read_cpu_flags()


def choose_precision(requested: str, backend: str, flags: frozenset[str] | None) -> PrecisionChoice:
    """What ``ENCODER_PRECISION=requested`` computes in with ``ENCODER_BACKEND=backend`` on a CPU
    with ``flags`` (None: unknown). Explicit float32 and bfloat16 are kept as they are (the runtime
    refuses bfloat16 where torch cannot compute it, and on onnxruntime)."""
    if requested != "auto":
        return PrecisionChoice(requested, f"ENCODER_PRECISION={requested}")
    if backend != "torch":
        return PrecisionChoice(
            "float32",
            f"ENCODER_PRECISION=auto with ENCODER_BACKEND={backend}: float32, the only precision the "
            "onnxruntime backend computes in here (its CPU provider has no bfloat16 kernels for these layers)",
        )
    if flags is None:
        return PrecisionChoice("float32", "ENCODER_PRECISION=auto: float32, the CPU's flags cannot be read here (no /proc/cpuinfo)")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return PrecisionChoice(
            "bfloat16",
            f"ENCODER_PRECISION=auto: bfloat16, this CPU computes it natively ({', '.join(native)}); "
            "set ENCODER_PRECISION=float32 for float32",
        )
    return PrecisionChoice(
        "float32",
        "ENCODER_PRECISION=auto: float32, this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16 "
        "among its flags), where bfloat16 would be emulated and slower",
    )
