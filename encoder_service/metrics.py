"""The encoder's own Prometheus instruments, beside the ones every service has (services.http.metrics)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from encoder_service.runtime import TokenizedText
from services.http.metrics import ServiceMetrics

BATCH_TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
BATCH_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class EncoderMetrics:
    """Batch sizes, tokens and texts encoded, truncations; the queue depth is read at scrape time."""

    def __init__(self, metrics: ServiceMetrics, app: FastAPI) -> None:
        registry = metrics.registry
        self.batch_texts = Histogram(
            "seam_encoder_batch_texts", "Texts per batch the batcher hands to the model.",
            buckets=BATCH_TEXT_BUCKETS, registry=registry,
        )
        self.batch_tokens = Histogram(
            "seam_encoder_batch_tokens", "Tokens (unpadded) per batch the batcher hands to the model.",
            buckets=BATCH_TOKEN_BUCKETS, registry=registry,
        )
        self.tokens = Counter("seam_encoder_tokens", "Tokens encoded, special tokens included.", registry=registry)
        self.texts = Counter("seam_encoder_texts", "Texts encoded.", registry=registry)
        self.truncated = Counter("seam_encoder_truncated_texts", "Texts cut to the model window.", registry=registry)
        queue = Gauge("seam_encoder_queue_depth", "Texts waiting for the model.", registry=registry)
        queue.set_function(lambda: float(getattr(getattr(app.state, "batcher", None), "depth", 0)))

    def observe_batch(self, items: list[TokenizedText]) -> None:
        tokens = sum(item.n_tokens for item in items)
        self.batch_texts.observe(len(items))
        self.batch_tokens.observe(tokens)
        self.tokens.inc(tokens)
        self.texts.inc(len(items))
        self.truncated.inc(sum(item.truncated for item in items))
