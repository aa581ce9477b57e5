"""What the gateway remembers of the classifier: version records and check results.

Nothing but caches lives here (``gateway.cache``), so several gateways can run side by side:

- classifier version records, reused for ``pipeline_ttl_s`` (a version trained through another
  gateway is seen after at most that long; this gateway's own fits, deletes and alias moves at once);
- check results, keyed by the identity of both contracts: ``check`` runs again only when one side
  changes, never per request.

Each encoder's contracts are held by ``gateway.encoders``, the routes decided from them by
``gateway.routing``.
"""

from __future__ import annotations

from typing import Any

from gateway.cache import Cache
from gateway.settings import GatewaySettings
from gateway.upstreams import ClassifierClient, UpstreamRejected
from services import tracing
from services.compatibility import Mismatch, check
from services.contracts import TensorContract
from services.errors import PipelineNotFound
from services.inputs import check_name
from services.wire import VersionRecord


class Catalog:
    """Version records read from the classifier (``latest``, ``version``) and the checks run on them."""

    def __init__(self, settings: GatewaySettings, classifier: ClassifierClient) -> None:
        self.settings = settings
        self.classifier = classifier
        self._latest: Cache[str, VersionRecord] = Cache(ttl_s=settings.pipeline_ttl_s)
        self._versions: Cache[tuple[str, int], VersionRecord] = Cache(ttl_s=settings.pipeline_ttl_s)
        self._checks: Cache[tuple[Any, ...], tuple[Mismatch, ...]] = Cache()
        self.checks_run = 0  # how often check() really ran (the cache makes it rare)

    def remember(self, record: VersionRecord, *, latest: bool) -> None:
        self._versions.put((record.name, record.version), record)
        if latest:
            self._latest.put(record.name, record)

    def forget(self, name: str) -> None:
        self._latest.pop(name)
        self._versions.drop(lambda key: key[0] == name)

    async def latest(self, name: str, *, fresh: bool = False) -> VersionRecord:
        check_name(name)
        cached = None if fresh else self._latest.get(name)
        if cached is not None:
            return cached
        try:
            record = await self.classifier.latest(name)
        except UpstreamRejected as exc:
            if exc.status == 404:
                self.forget(name)
                raise PipelineNotFound(
                    f"no pipeline named {name!r}: train it with POST /v1/pipelines/{name}/train", pipeline=name
                ) from exc
            raise
        self.remember(record, latest=True)
        return record

    async def version(self, name: str, version: int, *, fresh: bool = False) -> VersionRecord:
        check_name(name)
        cached = None if fresh else self._versions.get((name, version))
        if cached is not None:
            return cached
        try:
            record = await self.classifier.version(name, version)
        except UpstreamRejected as exc:
            if exc.status == 404:
                self._versions.pop((name, version))
                raise PipelineNotFound(f"pipeline {name!r} has no version {version}", pipeline=name, version=version) from exc
            raise
        self.remember(record, latest=False)
        return record

    def checked(
        self, key: tuple[Any, ...], produced: TensorContract, producer: str, record: VersionRecord, consumer: str
    ) -> tuple[Mismatch, ...]:
        """``check(produced, record's input contract)``, once per (producer ``key``, record identity)."""
        cache_key = (key, producer, record.identity, consumer)
        found = self._checks.get(cache_key)
        if tracing.tracer is not None:  # the decision as a span: cached or computed, and its verdict
            attributes = {"seam.producer": producer, "seam.consumer": consumer, "seam.check.cached": found is not None}
            with tracing.span("compatibility check", attributes=attributes) as span:
                found = found if found is not None else self._check(cache_key, produced, record, producer, consumer)
                span.set_attribute("seam.check.compatible", not found)
                span.set_attribute("seam.check.mismatches", [m.field for m in found])
                return found
        return found if found is not None else self._check(cache_key, produced, record, producer, consumer)

    def _check(self, cache_key: tuple[Any, ...], produced: TensorContract, record: VersionRecord, producer: str,
               consumer: str) -> tuple[Mismatch, ...]:
        found = tuple(check(produced, record.input_contract, producer=producer, consumer=consumer,
                            tolerance=self.settings.fingerprint_tolerance))
        self._checks.put(cache_key, found)
        self.checks_run += 1
        return found
