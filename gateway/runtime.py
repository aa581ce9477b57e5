"""The gateway's pipeline logic, with no HTTP framework in it.

A pipeline is a classifier model; its version record says what it was fitted on (``input_contract``)
and where that comes from (``source``: an encoder output, or another pipeline's version). Resolving
a pipeline walks those sources down to the encoder, giving a chain of links; each link pairs a
producer's output contract with a consumer's input contract and carries the mismatches
``services.compatibility.check`` finds between them.

Nothing but caches lives here, so several gateways can run side by side:

- each registered encoder's output contracts (``gateway.encoders``), re-read when an encode answer
  carries another contract id (``X-Seam-Contract``: the encoder restarted with another model or other
  settings), when a report is asked for, and by /readyz;
- which encoder serves each version's encoder-fed link (``gateway.routing``), and the measurements that
  accepted an encoder computing the same space differently (``gateway.acceptance``);
- classifier version records, reused for ``pipeline_ttl_s`` (a version trained through another
  gateway is seen after at most that long);
- check results, keyed by the identity of both contracts: ``check`` runs again only when one side
  changes, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from gateway.acceptance import AcceptanceMeter
from gateway.aliases import PRODUCTION, AliasBook
from gateway.coalescing import Coalescer
from gateway.deadlines import Progress, out_of_time, tracked
from gateway.drift import DriftMonitor
from gateway.encoders import EncoderRegistry, readiness
from gateway.routing import Route, Router, refuse_if_unreachable
from gateway.settings import DEFAULT_ENCODER, GatewaySettings
from gateway.upstreams import (
    ClassifierClient,
    Encoded,
    EncoderClient,
    ModelVersion,
    Predicted,
    UpstreamRejected,
)
from services.codecs import Ragged, Tensor
from services.compatibility import Mismatch, check
from services.contracts import KINDS, TensorContract, is_valid_model_name
from services.errors import (
    IncompatiblePipeline,
    InvalidInput,
    OutputUnavailable,
    PipelineNotFound,
    UpstreamUnavailable,
)
from services import tracing
from services.inputs import check_labels, check_name, check_texts
from services.scoring import classification_report, regression_report

log = logging.getLogger("seam.gateway")

PIPELINE_PREFIX = "pipeline:"
_MAX_CACHED_CHECKS = 4096
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One text's answer through a chain: a label and probabilities, or a regressor's value; its
    out-of-distribution score (the highest over the chain's links) when every link has a summary."""

    label: str | None
    probabilities: list[float] | None
    value: float | None
    truncated: bool
    ood: float | None
    in_distribution: bool | None

    def as_dict(self, classes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = (
            {"value": self.value} if self.value is not None
            else {"label": self.label, "probabilities": dict(zip(classes, self.probabilities or []))}
        )
        out["truncated"] = self.truncated
        if self.ood is not None:
            out["ood"], out["in_distribution"] = self.ood, self.in_distribution
        return out


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


def pipeline_contract(record: ModelVersion) -> TensorContract:
    """What a pipeline emits: its probabilities, one column per class in the version's order."""
    return TensorContract(kind="probabilities", dim=len(record.classes), dtype="float32", labels=list(record.classes))


# --- chains ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One seam: a producer (an encoder output or a pipeline) feeding a consumer (a classifier version)."""

    model: ModelVersion
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
    def head(self) -> ModelVersion:
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


# --- tensors ---------------------------------------------------------------------------------------------


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _concat(tensors: list[Tensor]) -> Tensor:
    if len(tensors) == 1:
        return tensors[0]
    if isinstance(tensors[0], Ragged):
        return Ragged(np.concatenate([t.values for t in tensors]), np.concatenate([t.lengths for t in tensors]))
    return np.concatenate(tensors, axis=0)


def _width(tensor: Tensor) -> int:
    return tensor.dim if isinstance(tensor, Ragged) else int(tensor.shape[1])


# --- the runtime -----------------------------------------------------------------------------------------


class GatewayRuntime:
    """Resolves, checks, encodes, predicts and trains. Built by the app's lifespan, one per process."""

    def __init__(
        self,
        settings: GatewaySettings,
        encoders: EncoderRegistry | EncoderClient,
        classifier: ClassifierClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.settings = settings
        if isinstance(encoders, EncoderClient):  # one encoder: the default
            encoders = EncoderRegistry({DEFAULT_ENCODER: encoders}, retry_s=settings.recheck_interval_s, clock=clock)
        self.encoders = encoders
        self.classifier = classifier
        self._clock = clock
        self.meter = AcceptanceMeter(settings, classifier)
        self.router = Router(encoders, self.meter, self._checked)
        self._latest: dict[str, tuple[float, ModelVersion]] = {}
        self.aliases = AliasBook(classifier, self.latest, lambda name: self._latest.pop(name, None))
        self._versions: dict[tuple[str, int], tuple[float, ModelVersion]] = {}
        self._purge_at = 64  # the size of _versions at which expired records are dropped
        self._checks: dict[tuple[Any, ...], tuple[Mismatch, ...]] = {}
        self.checks_run = 0  # how often check() really ran (the cache makes it rare)
        self.drift = drift or DriftMonitor(settings.drift_window)
        self._last_threshold: float | None = None
        self.coalescer: Coalescer[Row] = Coalescer(
            self._run_rows, max_texts=settings.max_texts, max_in_flight=settings.coalesce_max_in_flight
        )

    @property
    def encoder(self) -> EncoderClient:
        """The default encoder (the first registered): the one training uses unless told otherwise."""
        return self.encoders.client(self.encoders.default)

    async def warm(self) -> None:
        """At start, best effort: the contracts are read on first use anyway."""
        await self.encoders.warm()

    # -- classifier records --

    def _remember(self, record: ModelVersion, *, latest: bool) -> None:
        now = self._clock()
        expires = now + self.settings.pipeline_ttl_s
        if len(self._versions) >= self._purge_at:
            # Expired records are read again anyway: drop them, so the cache holds the versions in use,
            # not every version ever asked for (memory grew with each new version otherwise).
            self._versions = {k: v for k, v in self._versions.items() if v[0] > now}
            self._purge_at = 2 * len(self._versions) + 64
        self._versions[(record.name, record.version)] = (expires, record)
        if latest:
            self._latest[record.name] = (expires, record)

    def _forget(self, name: str) -> None:
        self._latest.pop(name, None)
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]

    async def latest(self, name: str, *, fresh: bool = False) -> ModelVersion:
        check_name(name)
        cached = self._latest.get(name)
        if cached and not fresh and cached[0] > self._clock():
            return cached[1]
        try:
            record = await self.classifier.latest(name)
        except UpstreamRejected as exc:
            if exc.status == 404:
                self._forget(name)
                raise PipelineNotFound(
                    f"no pipeline named {name!r}: train it with POST /v1/pipelines/{name}/train", pipeline=name
                ) from exc
            raise
        self._remember(record, latest=True)
        return record

    async def version(self, name: str, version: int, *, fresh: bool = False) -> ModelVersion:
        check_name(name)
        cached = self._versions.get((name, version))
        if cached and not fresh and cached[0] > self._clock():
            return cached[1]
        try:
            record = await self.classifier.version(name, version)
        except UpstreamRejected as exc:
            if exc.status == 404:
                self._versions.pop((name, version), None)
                raise PipelineNotFound(f"pipeline {name!r} has no version {version}", pipeline=name, version=version) from exc
            raise
        self._remember(record, latest=False)
        return record

    # -- chains and checks --

    def _checked(
        self, key: tuple[Any, ...], produced: TensorContract, producer: str, record: ModelVersion, consumer: str
    ) -> tuple[Mismatch, ...]:
        cache_key = (key, producer, record.identity, consumer)
        found = self._checks.get(cache_key)
        if tracing.tracer is not None:  # the decision as a span: cached or computed, and its verdict
            attributes = {"seam.producer": producer, "seam.consumer": consumer, "seam.check.cached": found is not None}
            with tracing.span("compatibility check", attributes=attributes) as span:
                found = found if found is not None else self._check(cache_key, produced, producer, record, consumer)
                span.set_attribute("seam.check.compatible", not found)
                span.set_attribute("seam.check.mismatches", [m.field for m in found])
                return found
        return found if found is not None else self._check(cache_key, produced, producer, record, consumer)

    def _check(
        self, cache_key: tuple[Any, ...], produced: TensorContract, producer: str, record: ModelVersion, consumer: str
    ) -> tuple[Mismatch, ...]:
        if len(self._checks) >= _MAX_CACHED_CHECKS:
            self._checks.clear()
        found = tuple(
            check(
                produced,
                record.input_contract,
                producer=producer,
                consumer=consumer,
                tolerance=self.settings.fingerprint_tolerance,
            )
        )
        self._checks[cache_key] = found
        self.checks_run += 1
        return found

    def _consumer(self, record: ModelVersion) -> str:
        return f"{self.classifier.name} model {record.name} v{record.version}"

    def _broken(self, record: ModelVersion, source: Source | None, producer: str | None, why: str, actual: Any) -> Link:
        consumer = self._consumer(record)
        mismatch = Mismatch(
            field="source", expected="a producer to feed it", actual=actual, message=why, producer=producer, consumer=consumer
        )
        return Link(record, source, producer, consumer, None, None, (mismatch,))

    async def _encoder_link(self, record: ModelVersion, source: EncoderSource) -> Link:
        """Routed to a registered encoder that fits (``gateway.routing``), or refused with every one's reasons."""
        consumer = self._consumer(record)
        route = await self.router.route(record, source.output, source.encoder, consumer)
        chosen = route.chosen
        if chosen is not None and chosen.offered is not None:
            return Link(record, source, chosen.producer, consumer, chosen.offered.contract, chosen.offered.id, (), route)
        producer = route.candidates[0].producer if len(route.candidates) == 1 else "any registered encoder"
        return Link(record, source, producer, consumer, None, None, route.mismatches(), route)

    async def chain_from(self, head: ModelVersion, *, fresh: bool = False) -> Chain:
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
                base = await self.version(source.name, source.version, fresh=fresh)
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
            found = self._checked(("pipeline", base.identity), produced, producer, record, consumer)
            links.append(Link(record, source, producer, consumer, produced, None, found))
            record = base
        return Chain(tuple(reversed(links)))

    async def chain(self, name: str, version: int | None = None, *, fresh: bool = False) -> Chain:
        head = await (self.version(name, version, fresh=fresh) if version is not None else self.latest(name, fresh=fresh))
        return await self.chain_from(head, fresh=fresh)

    async def runnable_chain(self, name: str, version: int | None = None, *, fresh: bool = False) -> Chain:
        """The chain, or IncompatiblePipeline. A cached refusal is not trusted forever: the encoder may
        have come back with the fitted model under the same id, so its contracts are read again first
        (at most every ``recheck_interval_s``)."""
        chain = await self.chain(name, version, fresh=fresh)
        if not chain.compatible and not fresh:
            # Never refuse on cached records: one deleted meanwhile answers 404, not this chain's 409.
            chain = await self.chain(name, version, fresh=True)
        if not chain.compatible and self._clock() - self.encoders.checked_at >= self.settings.recheck_interval_s:
            await self.encoders.refresh_all()
            chain = await self.chain_from(chain.head)
        refuse_if_unreachable(chain.root.route, chain.head)
        chain.refuse_if_incompatible()
        return chain

    # -- running a chain --

    async def _encode_for(self, chain: Chain, texts: list[str]) -> tuple[Chain, Encoded]:
        """Encode for the chain's root. An answer under another contract id means the encoder changed:
        re-read its contracts, re-check the chain, and refuse if it no longer fits."""
        for _ in range(2):
            root = chain.root
            assert isinstance(root.source, EncoderSource) and root.producer_id is not None and root.encoder is not None
            encoder = self.encoders.client(root.encoder)
            encoded = await encoder.encode(list(texts), root.source.output)
            if encoded.contract_id == root.producer_id:
                break
            await self.encoders.reread(root.encoder, encoded.contract_id)
            chain = await self.chain_from(chain.head)
            refuse_if_unreachable(chain.root.route, chain.head)
            chain.refuse_if_incompatible()
            if chain.root.encoder == root.encoder and chain.root.producer_id == encoded.contract_id:
                root = chain.root
                break
            # routed to another encoder meanwhile, or the answer's contract is still not listed: once more
        else:
            raise UpstreamUnavailable(
                f"{encoder.name} answered under contract {encoded.contract_id[:12]} but lists "
                f"{(root.producer_id or '?')[:12]} for {root.source.output}: is it restarting? retry",
                upstream=encoder.name, stage=f"encode {root.source.output}",
            )
        assert root.produced is not None
        width = _width(encoded.tensor)
        if width != root.produced.dim:
            raise encoder.bad(
                f"encode {root.source.output}", f"{width}-wide vectors where its contract says {root.produced.dim}"
            )
        return chain, encoded

    async def _run(self, chain: Chain, texts: Sequence[str]) -> tuple[Chain, Predicted, list[bool]]:
        chain, encoded = await self._encode_for(chain, list(texts))
        features: Tensor = encoded.tensor
        predicted: Predicted | None = None
        scores: list[list[float] | None] = []
        for link in chain.links:
            predicted = await self.classifier.predict(link.model, features)
            features = predicted.probabilities
            scores.append(predicted.ood)
        assert predicted is not None
        if len(scores) > 1:  # a chain is out of distribution where any of its links is
            ood = [max(row) for row in zip(*scores)] if all(s is not None for s in scores) else None
            threshold = predicted.ood_threshold
            inside = None if ood is None or threshold is None else [score < threshold for score in ood]
            predicted = replace(predicted, ood=ood, in_distribution=inside)
        return chain, predicted, encoded.truncated

    async def _run_rows(self, chain: Chain, texts: list[str]) -> tuple[tuple[Chain, list[str], float | None], list[Row]]:
        """``_run`` for the coalescer: one :class:`Row` per text."""
        chain, predicted, truncated = await self._run(chain, texts)
        n = len(truncated)
        ood = predicted.ood or [None] * n
        inside = predicted.in_distribution or [None] * n
        if chain.head.regression:
            rows = [Row(None, None, float(v), cut, s, ok) for v, cut, s, ok in zip(predicted.values.tolist(), truncated, ood, inside)]
        else:
            rows = [Row(label, p, None, cut, s, ok) for label, p, cut, s, ok in
                    zip(predicted.labels, predicted.probabilities.tolist(), truncated, ood, inside)]
        return (chain, predicted.classes, predicted.ood_threshold), rows

    async def _gather(self, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run the jobs with at most ``train_concurrency`` in flight, in order."""
        limit = asyncio.Semaphore(self.settings.train_concurrency)

        async def one(job: Callable[[], Awaitable[T]]) -> T:
            async with limit:
                return await job()

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(job)) for job in jobs]
        except ExceptionGroup as failed:
            # One failed chunk fails the job with its own error (an upstream's 413, 503, 504...), not a 500.
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    # -- the public operations --

    async def predict(self, name: str, texts: list[str], version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """``version``, else ``alias``'s version, else ``production``'s, else the latest (``gateway.aliases``)."""
        check_name(name)
        check_texts(texts, max_texts=self.settings.max_texts, setting="GATEWAY_MAX_TEXTS")
        # One deadline from arrival to answer, however long the request waits behind others (gateway.deadlines).
        progress = Progress()
        deadline = asyncio.get_running_loop().time() + self.settings.timeout_s
        try:
            with tracked(progress):
                async with asyncio.timeout_at(deadline):
                    version = await self.aliases.resolve(name, version, alias)
                    chain, classes, rows = await self._predict(name, texts, version, deadline, progress)
        except TimeoutError:
            raise out_of_time(progress, self.settings.timeout_s) from None
        scored = [r for r in rows if r.ood is not None]
        if scored:
            self.drift.record(chain.head.name, [r.ood for r in scored], [bool(r.in_distribution) for r in scored],
                              self._last_threshold)
        return {
            "name": chain.head.name,
            "version": chain.head.version,
            "predictions": [row.as_dict(classes) for row in rows],
        }

    async def _submit(
        self, chain: Chain, texts: list[str], deadline: float | None = None, progress: Progress | None = None
    ) -> tuple[Chain, list[str], list[Row]]:
        # Requests for the same version arriving together share one encoder and one classifier call.
        (chain, classes, threshold), rows = await self.coalescer.submit(
            chain.head.identity, chain, texts, deadline=deadline, progress=progress
        )
        if threshold is not None:
            self._last_threshold = threshold
        return chain, classes, rows

    async def evaluate(
        self, name: str, texts: list[str], labels: list[str] | None, targets: list[Any] | None, version: int | None = None
    ) -> dict[str, Any]:
        """Predicts ``texts`` as predict does (in batches of ``max_texts``, through the coalescer) and
        scores the predictions against ``labels`` (a classifier) or ``targets`` (a regressor)."""
        check_name(name)
        check_texts(texts, max_texts=self.settings.max_evaluate_texts, setting="GATEWAY_MAX_EVALUATE_TEXTS")
        chain = await self.runnable_chain(name, version)
        head = chain.head
        truth = labels if labels is not None else targets
        if truth is None or (labels is not None and targets is not None):
            raise InvalidInput("Send labels (a classifier's) or targets (a regressor's), one per text, exactly one of them.")
        if len(truth) != len(texts):
            raise InvalidInput(f"{len(texts)} texts but {len(truth)} {'labels' if labels is not None else 'targets'}: one per text")
        if head.regression and labels is not None:
            raise InvalidInput(f"pipeline {name} v{head.version} is a regressor: evaluate it with numeric targets, not labels")
        if not head.regression:
            if targets is not None:
                raise InvalidInput(f"pipeline {name} v{head.version} is a classifier: evaluate it with labels, not targets")
            unknown = sorted(set(labels) - set(head.classes))
            if unknown:
                raise InvalidInput(
                    f"labels outside pipeline {name} v{head.version}'s classes: {', '.join(map(repr, unknown[:5]))}; "
                    f"its classes are {', '.join(head.classes)}",
                    unknown=unknown[:20], classes=head.classes,
                )
        else:
            targets = check_targets(targets)
        chunks = _chunks(texts, self.settings.max_texts)
        runs = await self._gather([lambda c=c: self._submit(chain, list(c)) for c in chunks])
        rows = [row for _, _, part in runs for row in part]
        result: dict[str, Any] = {"name": head.name, "version": head.version, "task": head.task}
        if head.regression:
            result["metrics"] = regression_report(np.asarray(targets), np.array([r.value for r in rows]))
        else:
            probabilities = np.array([r.probabilities for r in rows], dtype=np.float64)
            result["metrics"] = classification_report(head.classes, labels, probabilities)
        scores = [r.ood for r in rows if r.ood is not None]
        result["ood"] = None if len(scores) != len(rows) else {
            "mean_score": float(np.mean(scores)),
            "out_of_distribution_share": float(np.mean([not r.in_distribution for r in rows])),
        }
        return result

    async def drift_report(self, name: str, version: int | None = None) -> dict[str, Any]:
        check_name(name)
        head = await (self.version(name, version) if version is not None else self.latest(name))
        return self.drift.report(head.name, head.version)

    async def _predict(
        self, name: str, texts: list[str], version: int | None, deadline: float, progress: Progress
    ) -> tuple[Chain, list[str], list[Row]]:
        chain = await self.runnable_chain(name, version)
        for attempt in range(2):
            try:
                return await self._submit(chain, texts, deadline, progress)
            except UpstreamRejected as exc:
                progress.follows = None
                if exc.status != 404 or attempt:
                    raise
                # A cached record is gone (deleted since it was resolved): the answer must be the one for
                # the store as it is, not for the cache, so resolve again from the classifier: 404 for
                # a deleted pipeline, 409 for one whose base is gone, or the new state, run once more.
                for link in chain.links:
                    self._forget(link.model.name)
                chain = await self.runnable_chain(name, version, fresh=True)
        raise AssertionError("unreachable")

    async def _encoder_features(self, encoder: str, output: str, texts: list[str]) -> tuple[TensorContract, Tensor, int]:
        """Encode a training set in chunks on one encoder, all under one contract (the one the fit records)."""
        chunks = _chunks(texts, self.settings.train_chunk_size)
        client = self.encoders.client(encoder)
        for attempt in range(2):
            outputs = await self.encoders.outputs(encoder)
            offered = outputs.outputs.get(output)
            if offered is None:  # the cache may predate a restart with another model: ask before refusing
                outputs = await self.encoders.outputs(encoder, refresh=True)
                offered = outputs.outputs.get(output)
            if offered is None:
                raise OutputUnavailable(
                    f"{client.name} (model {outputs.model}) has no {output} output; it offers "
                    f"{', '.join(sorted(outputs.outputs))}",
                    output=output, encoder=encoder,
                )
            encoded = await self._gather([lambda c=c: client.encode(list(c), output) for c in chunks])
            ids = {e.contract_id for e in encoded}
            if ids != {offered.id}:
                outputs = await self.encoders.reread(encoder, next(iter(ids - {offered.id})))
                offered = outputs.outputs.get(output)
                if offered is None or ids != {offered.id}:
                    if attempt == 0:
                        continue  # the encoder changed mid-way: encode everything again under one contract
                    raise UpstreamUnavailable(
                        f"{client.name} changed its contract while the training set was encoded; retry",
                        upstream=client.name, stage=f"encode {output}",
                    )
            features = _concat([e.tensor for e in encoded])
            if _width(features) != offered.contract.dim:
                raise client.bad(
                    f"encode {output}", f"{_width(features)}-wide vectors where its contract says {offered.contract.dim}"
                )
            return offered.contract, features, sum(sum(e.truncated) for e in encoded)
        raise AssertionError("unreachable")

    async def _pipeline_features(self, base: str, texts: list[str], version: int | None = None
                                 ) -> tuple[TensorContract, Tensor, int, ModelVersion]:
        chain = await self.runnable_chain(base, version, fresh=True)
        if len(chain.links) >= self.settings.max_chain_depth:  # refused now, not on every predict after a 201
            raise InvalidInput(
                f"pipeline {base} is already a chain of {len(chain.links)} links: one more would exceed the "
                f"maximum depth of {self.settings.max_chain_depth} (GATEWAY_MAX_CHAIN_DEPTH); build on a shorter "
                "pipeline or raise GATEWAY_MAX_CHAIN_DEPTH",
                pipeline=base, max_chain_depth=self.settings.max_chain_depth,
            )
        if chain.head.regression:
            raise InvalidInput(
                f"pipeline {base} v{chain.head.version} is a regressor: it emits a value, not probabilities, so it "
                f"cannot feed another pipeline (feature pipeline:{base}); feed this one from an encoder output instead",
                feature=f"pipeline:{base}",
            )
        chunks = _chunks(texts, self.settings.train_chunk_size)
        runs = await self._gather([lambda c=c: self._run(chain, c) for c in chunks])
        features = np.concatenate([predicted.probabilities for _, predicted, _ in runs], axis=0)
        truncated = sum(sum(cut) for _, _, cut in runs)
        return pipeline_contract(chain.head), features, truncated, chain.head

    async def train(
        self,
        name: str,
        texts: list[str],
        labels: list[str] | None,
        estimator: str | None,
        feature: str,
        params: dict[str, Any],
        encoder: str | None = None,
        retain_texts: bool = True,
        base_version: int | None = None,
        *,
        targets: list[Any] | None = None,
        preprocess: list[Any] | None = None,
        calibrate: str | None = None,
    ) -> dict[str, Any]:
        """A new version fitted on ``feature`` of ``texts``; an encoder feature comes from ``encoder`` (default:
        the first registered), recorded in its source; a ``pipeline:<name>`` feature comes from ``base_version`` of
        that pipeline (default: its latest). With ``retain_texts`` the texts are kept with the version in the
        classifier's store, with a reference sample for measured acceptance."""
        check_name(name)
        source = parse_feature(feature)
        encoder = self.encoders.get(encoder or self.encoders.default).name  # UnknownEncoder: 422 listing them
        if (labels is None) == (targets is None):
            raise InvalidInput("Send labels (a classifier) or numeric targets (a regressor), one per text, exactly one of them.")
        given = labels if labels is not None else targets
        if len(texts) != len(given):
            what = "labels" if labels is not None else "targets"
            raise InvalidInput(f"{len(texts)} texts but {len(given)} {what}: one per text")
        if targets is not None:
            targets = check_targets(targets)  # before any encoding
        check_texts(texts, max_texts=self.settings.max_train_texts, setting="GATEWAY_MAX_TRAIN_TEXTS")
        if labels is not None:
            check_labels(labels, self.settings.max_label_chars)
        if isinstance(source, PipelineSource):
            if source.name == name:
                raise InvalidInput(f"pipeline {name} cannot be fed by its own probabilities; name another pipeline")
            contract, features, truncated, base = await self._pipeline_features(source.name, texts, base_version)
            source = PipelineSource(base.name, base.version)
        else:
            contract, features, truncated = await self._encoder_features(encoder, source.output, texts)
            # The one unnamed encoder is not recorded: a record without a name resolves to the first encoder.
            source = EncoderSource(source.output, None if encoder == DEFAULT_ENCODER else encoder)
        meta = {
            "contract": contract.model_dump(mode="json"),
            "estimator": estimator,
            "params": params,
            "source": source.as_dict(),
            **({"labels": labels} if labels is not None else {"targets": targets}),
            **({"preprocess": preprocess} if preprocess else {}),
            **({"calibrate": calibrate} if calibrate is not None else {}),
        }
        if retain_texts:  # the user's data: kept with the version, never logged
            meta.update(texts=texts, reference_sample=self.settings.reference_sample)
        record = await self.classifier.fit(name, features, meta, timeout_s=self.settings.fit_timeout_s)
        self._remember(record, latest=True)  # the fit's answer carries the model's aliases, as /latest does
        return {
            "name": record.name,
            "version": record.version,
            "estimator": record.estimator,
            "params": record.params,
            "feature": feature,
            "source": record.source,
            "input_contract": record.input_contract.model_dump(mode="json"),
            "task": record.task,
            "classes": record.classes,
            "preprocess": getattr(record, "preprocess", None) or [],
            "calibrate": getattr(record, "calibrate", None),
            "metrics": record.metrics,
            "truncated_texts": truncated,
            "created_at": record.created_at,
            "retained": getattr(record, "retained", None),
        }

    async def delete(self, name: str) -> None:
        """Deletes every version of the pipeline's model (admin scope at the gateway)."""
        check_name(name)
        try:
            await self.classifier.delete(name)
        except UpstreamRejected as exc:
            if exc.status == 404:
                raise PipelineNotFound(f"no pipeline named {name!r} to delete", pipeline=name) from exc
            raise
        finally:
            self._forget(name)

    async def pipeline_report(self, name: str) -> dict[str, Any]:
        check_name(name)
        await self._refresh_for_report()
        aliases = await self.aliases.get(name, fresh=True)
        # The version served by default: production when set, else the latest; records read again too.
        report = (await self.chain(name, aliases.get(PRODUCTION), fresh=True)).report()
        return {**report, "aliases": aliases}

    async def _refresh_for_report(self) -> None:
        """A report tells how things stand now: every encoder re-read; it fails only when none answers."""
        errors = await self.encoders.refresh_all()
        if all(errors.values()):
            raise next(iter(errors.values()))  # type: ignore[misc]

    async def pipelines_report(self) -> dict[str, Any]:
        await self._refresh_for_report()
        reports = []
        for record in await self.classifier.models():
            self._remember(record, latest=True)
            aliases = await self.aliases.get(record.name, fresh=True)
            served = aliases.get(PRODUCTION)
            if served is not None and served != record.version:
                record = await self.version(record.name, served, fresh=True)
            reports.append({**(await self.chain_from(record, fresh=True)).report(), "aliases": aliases})
        return {"pipelines": sorted(reports, key=lambda r: r["name"])}

    async def readiness(self) -> dict[str, Any]:
        """The classifier and at least one encoder ready; NotReady names who fails (``gateway.encoders``)."""
        return await readiness(self.encoders, self.classifier)

    async def encoders_report(self) -> dict[str, Any]:
        """``GET /v1/encoders``: each registered encoder, its readiness, model and outputs."""
        return {"encoders": await self.encoders.status()}


def check_targets(targets: list[Any] | None) -> list[float]:
    """Numeric, finite targets; 422 naming the first that is not."""
    out = []
    for i, value in enumerate(targets or []):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"targets must be numbers: targets[{i}] is {value!r}", index=i)
        if not math.isfinite(value):
            raise InvalidInput(f"targets must be finite numbers: targets[{i}] is {value!r}", index=i)
        out.append(float(value))
    return out
