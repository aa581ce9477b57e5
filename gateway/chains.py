"""A pipeline's chain: where its features come from, walked down to the encoder, every seam checked.

A pipeline is a classifier model; its version record says what it was fitted on (``input_contract``)
and where that comes from (``source``: an encoder output, or another pipeline's version). Resolving
a pipeline walks those sources down to the encoder, giving a chain of links; each link pairs a
producer's output contract with a consumer's input contract and carries the mismatches
``services.compatibility.check`` finds between them (run once per pair: ``gateway.catalog``). The
encoder serving an encoder-fed link is chosen by ``gateway.routing``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.catalog import Catalog
from gateway.encoders import EncoderRegistry
from gateway.routing import Route, Router, refuse_if_unreachable
from gateway.settings import GatewaySettings
from services.compatibility import Mismatch
from services.contracts import KINDS, TensorContract, is_valid_model_name
from services.errors import IncompatiblePipeline, InvalidInput, PipelineNotFound
from services.inputs import check_name
from services.wire import VersionRecord

PIPELINE_PREFIX = "pipeline:"


# --- sources ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSource:
    """Features straight from an encoder's output; ``encoder``: the registered name it was fitted through
    (None in records that predate several encoders, and for a gateway's one unnamed encoder)."""

    output: str
    encoder: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {"type": "encoder", "output": self.output}
        return found if self.encoder is None else {**found, "encoder": self.encoder}


@dataclass(frozen=True)
class PipelineSource:
    """The probabilities of another pipeline; ``version`` is None only in a train request (the latest)."""

    name: str
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": "pipeline", "name": self.name, "version": self.version}


Source = EncoderSource | PipelineSource


def parse_feature(feature: str) -> Source:
    """A train request's ``feature``: ``embedding``, ``tokens``, ``probabilities`` or ``pipeline:<name>``."""
    if feature in KINDS:
        return EncoderSource(feature)
    if feature.startswith(PIPELINE_PREFIX):
        return PipelineSource(check_name(feature[len(PIPELINE_PREFIX) :], "pipeline"))
    raise InvalidInput(
        f"unknown feature {feature!r}: use one of {', '.join(KINDS)} or {PIPELINE_PREFIX}<pipeline name>",
        feature=feature,
    )


def parse_source(raw: Any) -> Source:
    """A version record's ``source``; ValueError says why it cannot be followed."""
    if not isinstance(raw, dict):
        raise ValueError("no source was recorded when it was fitted (fit it through the gateway)")
    kind = raw.get("type")
    if kind == "encoder" and raw.get("output") in KINDS:
        encoder = raw.get("encoder")
        return EncoderSource(raw["output"], encoder if isinstance(encoder, str) and is_valid_model_name(encoder) else None)
    if kind == "pipeline" and isinstance(raw.get("name"), str) and is_valid_model_name(raw["name"]):
        version = raw.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            return PipelineSource(raw["name"], version)
    raise ValueError(f"its recorded source {raw!r} names no encoder output and no pipeline version")


def pipeline_contract(record: VersionRecord) -> TensorContract:
    """What a pipeline emits: its probabilities, one column per class in the version's order."""
    return TensorContract(kind="probabilities", dim=len(record.classes), dtype="float32", labels=list(record.classes))


# --- chains ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One seam: a producer (an encoder output or a pipeline) feeding a consumer (a classifier version)."""

    model: VersionRecord
    source: Source | None
    producer: str | None
    consumer: str
    produced: TensorContract | None
    producer_id: str | None  # the encoder's contract id, for an encoder link
    mismatches: tuple[Mismatch, ...]
    route: Route | None = None  # for an encoder link: the encoder chosen, and every one weighed

    @property
    def compatible(self) -> bool:
        return not self.mismatches

    @property
    def encoder(self) -> str | None:
        """The registered name of the encoder serving this link."""
        return self.route.chosen.encoder if self.route and self.route.chosen else None

    def report(self) -> dict[str, Any]:
        report = {
            "source": self.source.as_dict() if self.source else self.model.source,
            "producer": self.producer,
            "consumer": {"model": self.model.name, "version": self.model.version, "estimator": self.model.estimator},
            "compatible": self.compatible,
            "mismatches": [m.model_dump(mode="json") for m in self.mismatches],
        }
        if self.route is not None:
            chosen = self.route.chosen
            report["encoder"] = chosen.encoder if chosen else None
            report["acceptance"] = chosen.acceptance if chosen else None
            if chosen is None:
                report["encoders"] = [c.report() for c in self.route.candidates]
        else:
            report["acceptance"] = {"accepted": "exact"} if self.compatible else None
        return report


@dataclass(frozen=True)
class Chain:
    """The links of a pipeline, the encoder-fed one first and the named pipeline last."""

    links: tuple[Link, ...]

    @property
    def head(self) -> VersionRecord:
        return self.links[-1].model

    @property
    def root(self) -> Link:
        return self.links[0]

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for link in self.links for m in link.mismatches]

    @property
    def compatible(self) -> bool:
        return all(link.compatible for link in self.links)

    def report(self) -> dict[str, Any]:
        head = self.head
        return {
            "name": head.name,
            "version": head.version,
            "estimator": head.estimator,
            "classes": head.classes,
            "compatible": self.compatible,
            "mismatches": [m.model_dump(mode="json") for m in self.mismatches],
            "chain": [link.report() for link in self.links],
        }

    def refuse_if_incompatible(self) -> None:
        if self.compatible:
            return
        parts = []
        for link in self.links:
            if link.mismatches:
                fields = "; ".join(f"{m.field}: {m.message}" for m in link.mismatches)
                parts.append(f"{link.consumer} cannot take the output of {link.producer or 'its source'} ({fields})")
        head = self.head
        raise IncompatiblePipeline(
            f"pipeline {head.name} v{head.version} is incompatible: " + "; ".join(parts),
            pipeline=head.name,
            version=head.version,
            mismatches=[m.model_dump(mode="json") for m in self.mismatches],
        )


# --- resolving ------------------------------------------------------------------------------------------


class Chains:
    """Resolves pipelines into checked chains, from the records of the catalog."""

    def __init__(self, settings: GatewaySettings, catalog: Catalog, encoders: EncoderRegistry, router: Router) -> None:
        self.settings = settings
        self.catalog = catalog
        self.encoders = encoders
        self.router = router

    def _consumer(self, record: VersionRecord) -> str:
        return f"{self.catalog.classifier.name} model {record.name} v{record.version}"

    def _broken(self, record: VersionRecord, source: Source | None, producer: str | None, why: str, actual: Any) -> Link:
        consumer = self._consumer(record)
        mismatch = Mismatch(
            field="source", expected="a producer to feed it", actual=actual, message=why, producer=producer, consumer=consumer
        )
        return Link(record, source, producer, consumer, None, None, (mismatch,))

    async def _encoder_link(self, record: VersionRecord, source: EncoderSource) -> Link:
        """Routed to a registered encoder that fits (``gateway.routing``), or refused with every one's reasons."""
        consumer = self._consumer(record)
        route = await self.router.route(record, source.output, source.encoder, consumer)
        chosen = route.chosen
        if chosen is not None and chosen.offered is not None:
            return Link(record, source, chosen.producer, consumer, chosen.offered.contract, chosen.offered.id, (), route)
        producer = route.candidates[0].producer if len(route.candidates) == 1 else "any registered encoder"
        return Link(record, source, producer, consumer, None, None, route.mismatches(), route)

    async def chain_from(self, head: VersionRecord, *, fresh: bool = False) -> Chain:
        """Walk the sources from ``head`` down to the encoder; every link checked (or taken from the cache).
        ``fresh`` reads every record from the classifier again instead of trusting the TTL cache."""
        links: list[Link] = []
        seen: set[tuple[Any, ...]] = set()
        record = head
        while True:
            if record.identity in seen or len(links) >= self.settings.max_chain_depth:
                why = f"the chain loops back or is longer than {self.settings.max_chain_depth} links (GATEWAY_MAX_CHAIN_DEPTH)"
                links.append(self._broken(record, None, None, why, record.source))
                break
            seen.add(record.identity)
            try:
                source = parse_source(record.source)
            except ValueError as exc:
                links.append(self._broken(record, None, None, str(exc), record.source))
                break
            if isinstance(source, EncoderSource):
                links.append(await self._encoder_link(record, source))
                break
            producer = f"pipeline {source.name} v{source.version}"
            assert source.version is not None
            try:
                base = await self.catalog.version(source.name, source.version, fresh=fresh)
            except PipelineNotFound:
                why = (f"pipeline {source.name} v{source.version}, its source, no longer exists (deleted): "
                       f"train {record.name} again on a pipeline that exists")
                links.append(self._broken(record, source, producer, why, None))
                break
            if base.regression:
                why = f"pipeline {source.name} v{source.version}, its source, is a regressor: it emits values, not probabilities"
                links.append(self._broken(record, source, producer, why, "regression"))
                break
            consumer = self._consumer(record)
            produced = pipeline_contract(base)
            found = self.catalog.checked(("pipeline", base.identity), produced, producer, record, consumer)
            links.append(Link(record, source, producer, consumer, produced, None, found))
            record = base
        return Chain(tuple(reversed(links)))

    async def chain(self, name: str, version: int | None = None, *, fresh: bool = False) -> Chain:
        catalog = self.catalog
        head = await (catalog.version(name, version, fresh=fresh) if version is not None else catalog.latest(name, fresh=fresh))
        return await self.chain_from(head, fresh=fresh)

    async def runnable_chain(self, name: str, version: int | None = None, *, fresh: bool = False) -> Chain:
        """The chain, or IncompatiblePipeline. A cached refusal is not trusted forever: the encoder may
        have come back with the fitted model under the same id, so its contracts are read again first
        (at most every ``recheck_interval_s``)."""
        chain = await self.chain(name, version, fresh=fresh)
        if not chain.compatible and not fresh:
            # Never refuse on cached records: one deleted meanwhile answers 404, not this chain's 409.
            chain = await self.chain(name, version, fresh=True)
        if not chain.compatible and time.monotonic() - self.encoders.checked_at >= self.settings.recheck_interval_s:
            await self.encoders.refresh_all()
            chain = await self.chain_from(chain.head)
        refuse_if_unreachable(chain.root.route, chain.head)
        chain.refuse_if_incompatible()
        return chain
