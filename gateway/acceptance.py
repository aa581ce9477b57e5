"""Measured acceptance: an encoder that serves a version's space but computes it differently.

Two contracts of the same space (model id, weights hash, pooling, normalisation, window; canary vectors
within tolerance) may still differ in how the vectors are computed: bfloat16 instead of float32, or
onnxruntime instead of torch. The check refuses on ``dtype``; such an encoder is then measured instead:
the version's reference sample (texts kept at fit time, stratified by label, with the probabilities the
version gave them then) is encoded on it and predicted with the version, and the encoder is accepted when
the labels agree on at least ``GATEWAY_MIN_AGREEMENT`` of the texts. A measurement is cached per (version,
encoder contract id): it runs once, not per request, and again only when either side changes.

A different space (another model, other weights, other pooling) is never measured: no agreement on a
sample proves that two spaces are one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.cache import Cache
from gateway.chunks import chunks, concat, gather
from gateway.settings import GatewaySettings
from gateway.upstreams import ClassifierClient, EncoderClient, UpstreamRejected
from services.compatibility import Mismatch
from services.errors import UpstreamUnavailable
from services.wire import VersionRecord

# The fields on which two contracts of one space may differ and still be measured. Everything else
# (kind, dim, labels, the space itself, the fingerprint) must match exactly.
MEASURABLE_FIELDS = frozenset({"dtype"})
_MISSING = object()


def measurable(mismatches: Iterable[Mismatch]) -> bool:
    """Whether the only differences are in how the same space is computed."""
    fields = {m.field for m in mismatches}
    return bool(fields) and fields <= MEASURABLE_FIELDS


@dataclass(frozen=True)
class Reference:
    """A version's reference sample: texts and the probabilities (``classes`` order) it gave them at fit time."""

    texts: list[str]
    classes: list[str]
    probabilities: np.ndarray


@dataclass(frozen=True)
class Measurement:
    """The version's labels on its reference sample, then (fit time) and now (through the measured encoder)."""

    agreement: float
    max_probability_change: float
    sample_size: int
    min_agreement: float

    @property
    def accepted(self) -> bool:
        return self.agreement >= self.min_agreement

    def report(self) -> dict[str, Any]:
        return {"accepted": "measured", "agreement": self.agreement,
                "max_probability_change": self.max_probability_change, "sample_size": self.sample_size}

    def refusal(self) -> dict[str, Any]:
        return {"agreement": self.agreement, "max_probability_change": self.max_probability_change,
                "sample_size": self.sample_size, "min_agreement": self.min_agreement}


def compare(reference: Reference, now: np.ndarray, min_agreement: float) -> Measurement:
    then = reference.probabilities
    agree = then.argmax(axis=1) == now.argmax(axis=1)
    return Measurement(
        agreement=round(float(agree.mean()), 6),
        max_probability_change=round(float(np.abs(now - then).max()), 6),
        sample_size=len(reference.texts),
        min_agreement=min_agreement,
    )


class AcceptanceMeter:
    """Reads reference samples from the classifier and measures encoders against them; caches both."""

    def __init__(self, settings: GatewaySettings, classifier: ClassifierClient) -> None:
        self.settings = settings
        self.classifier = classifier
        self._references: Cache[tuple[Any, ...], Reference | None] = Cache()
        self._measured: Cache[tuple[Any, ...], Measurement] = Cache()
        self._running: dict[tuple[Any, ...], asyncio.Future[Measurement]] = {}
        self.measurements_run = 0

    async def reference(self, record: VersionRecord) -> Reference | None:
        """The version's reference sample; None when it kept none (fitted before, or ``retain_texts: false``)."""
        known = self._references.get(record.identity, _MISSING)
        if known is not _MISSING:
            return known  # type: ignore[return-value]
        found: Reference | None = None
        if getattr(record, "retained", None):
            stage = f"read the reference sample of {record.name} v{record.version}"
            try:
                response = await self.classifier.request(
                    stage, "GET", f"/v1/models/{record.name}/versions/{record.version}/reference")
            except UpstreamRejected as exc:
                if exc.status != 404:
                    raise
            else:
                found = self._parse(stage, record, response.json())
        self._references.put(record.identity, found)
        return found

    def _parse(self, stage: str, record: VersionRecord, body: Any) -> Reference | None:
        try:
            texts = [str(t) for t in body["texts"]]
            probabilities = np.asarray(body["probabilities"], dtype=np.float64).reshape(len(texts), -1)
            classes = [str(c) for c in body["classes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise self.classifier.bad(stage, f"not a reference sample: {exc}") from exc
        if classes != record.classes or probabilities.shape[1] != len(classes):
            raise self.classifier.bad(stage, f"classes {classes} differ from the version's {record.classes}")
        return Reference(texts, classes, probabilities) if texts else None

    async def measure(self, record: VersionRecord, encoder: EncoderClient, output: str, contract_id: str,
                      reference: Reference) -> Measurement:
        """Once per (version, contract id), however many requests ask at the same time."""
        key = (record.identity, output, contract_id)
        measured = self._measured.get(key)
        if measured is not None:
            return measured
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._measure(record, encoder, output, contract_id, reference))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        measurement = await asyncio.shield(running)
        self._measured.put(key, measurement)
        return measurement

    async def _measure(self, record: VersionRecord, encoder: EncoderClient, output: str, contract_id: str,
                       reference: Reference) -> Measurement:
        size = self.settings.train_chunk_size
        encoded = await gather([lambda c=c: encoder.encode(list(c), output) for c in chunks(reference.texts, size)], 1)
        if {e.contract_id for e in encoded} != {contract_id}:
            raise UpstreamUnavailable(
                f"{encoder.name} changed its contract while {record.name} v{record.version}'s reference sample was "
                "measured on it; retry", upstream=encoder.name, stage=f"measure {output}",
            )
        predicted = await self.classifier.predict(record, concat([e.tensor for e in encoded]))
        self.measurements_run += 1
        return compare(reference, predicted.probabilities.astype(np.float64), self.settings.min_agreement)

