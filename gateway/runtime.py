"""The gateway's pipeline logic, with no HTTP framework in it.

A pipeline is a classifier model; its version record says what it was fitted on (``input_contract``)
and where that comes from (``source``: an encoder output, or another pipeline's version). Resolving
a pipeline walks those sources down to the encoder, giving a chain of links; each link pairs a
producer's output contract with a consumer's input contract and carries the mismatches
``services.compatibility.check`` finds between them.

Nothing but caches lives here, so several gateways can run side by side:

- the encoder's output contracts, re-read when an encode answer carries another contract id
  (``X-Seam-Contract``: the encoder restarted with another model or other settings), when a report
  is asked for, and by /readyz;
- classifier version records, reused for ``pipeline_ttl_s`` (a version trained through another
  gateway is seen after at most that long);
- check results, keyed by the identity of both contracts: ``check`` runs again only when one side
  changes, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from gateway.coalescing import Coalescer
from gateway.settings import GatewaySettings
from gateway.upstreams import (
    ClassifierClient,
    Encoded,
    EncoderClient,
    EncoderOutputs,
    ModelVersion,
    Predicted,
    UpstreamRejected,
)
from services.codecs import Ragged, Tensor
from services.compatibility import Mismatch, check
from services.contracts import KINDS, MODEL_NAME_PATTERN, TensorContract, is_valid_model_name
from services.errors import (
    IncompatiblePipeline,
    InvalidInput,
    NotReady,
    OutputUnavailable,
    PipelineNotFound,
    SeamError,
    UpstreamUnavailable,
)
from services import tracing
from services.inputs import check_texts

log = logging.getLogger("seam.gateway")

PIPELINE_PREFIX = "pipeline:"
_MAX_CACHED_CHECKS = 4096
T = TypeVar("T")


# --- sources ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSource:
    """Features straight from one of the encoder's outputs."""

    output: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": "encoder", "output": self.output}


@dataclass(frozen=True)
class PipelineSource:
    """The probabilities of another pipeline; ``version`` is None only in a train request (the latest)."""

    name: str
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": "pipeline", "name": self.name, "version": self.version}


Source = EncoderSource | PipelineSource


def check_name(name: str, what: str = "pipeline") -> str:
    if not is_valid_model_name(name):
        raise InvalidInput(
            f"{name!r} is not a valid {what} name: names match {MODEL_NAME_PATTERN} "
            "(lower-case letters, digits, '_' and '-', at most 64)",
            name=name,
        )
    return name


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
        return EncoderSource(raw["output"])
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

    @property
    def compatible(self) -> bool:
        return not self.mismatches

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source.as_dict() if self.source else self.model.source,
            "producer": self.producer,
            "consumer": {"model": self.model.name, "version": self.model.version, "estimator": self.model.estimator},
            "compatible": self.compatible,
            "mismatches": [m.model_dump(mode="json") for m in self.mismatches],
        }


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
        encoder: EncoderClient,
        classifier: ClassifierClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.classifier = classifier
        self._clock = clock
        self._outputs: EncoderOutputs | None = None
        self._outputs_read_at = float("-inf")
        self._outputs_lock = asyncio.Lock()
        self._latest: dict[str, tuple[float, ModelVersion]] = {}
        self._versions: dict[tuple[str, int], tuple[float, ModelVersion]] = {}
        self._purge_at = 64  # the size of _versions at which expired records are dropped
        self._checks: dict[tuple[Any, ...], tuple[Mismatch, ...]] = {}
        self.checks_run = 0  # how often check() really ran (the cache makes it rare)
        self.coalescer: Coalescer[tuple[str, list[float], bool]] = Coalescer(
            self._run_rows, max_texts=settings.max_texts, max_in_flight=settings.coalesce_max_in_flight
        )
        self.outputs_reads = 0  # how often /v1/outputs was read

    # -- encoder contracts --

    async def encoder_outputs(self, *, refresh: bool = False) -> EncoderOutputs:
        if self._outputs is None or refresh:
            async with self._outputs_lock:
                if self._outputs is None or refresh:
                    await self._read_outputs()
        assert self._outputs is not None
        return self._outputs

    async def _read_outputs(self) -> None:
        self._outputs = await self.encoder.outputs()
        self._outputs_read_at = self._clock()
        self.outputs_reads += 1

    async def _reread_outputs(self, seen_id: str) -> EncoderOutputs:
        """An encode answer carried ``seen_id``, unknown to the cache: the encoder changed; read it again
        (once, however many requests noticed at the same time)."""
        async with self._outputs_lock:
            current = self._outputs
            if current is None or all(o.id != seen_id for o in current.outputs.values()):
                log.info("%s changed its contract (now %s): re-reading its outputs", self.encoder.name, seen_id[:12])
                await self._read_outputs()
            assert self._outputs is not None
            return self._outputs

    async def warm(self) -> None:
        """At start, best effort: the contracts are read on first use anyway."""
        try:
            await self.encoder_outputs(refresh=True)
        except SeamError as exc:
            log.warning("encoder contracts not loaded at start: %s", exc.detail)

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
        outputs = await self.encoder_outputs()
        producer = f"{self.encoder.name} model {outputs.model} output {source.output}"
        offered = outputs.outputs.get(source.output)
        if offered is None:
            why = f"the encoder serves no {source.output} output (model {outputs.model} offers {', '.join(sorted(outputs.outputs))})"
            return self._broken(record, source, producer, why, sorted(outputs.outputs))
        consumer = self._consumer(record)
        found = self._checked(("encoder", source.output, offered.id), offered.contract, producer, record, consumer)
        return Link(record, source, producer, consumer, offered.contract, offered.id, found)

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
                why = f"pipeline {source.name} v{source.version}, its source, no longer exists"
                links.append(self._broken(record, source, producer, why, None))
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
        if not chain.compatible and self._clock() - self._outputs_read_at >= self.settings.recheck_interval_s:
            await self.encoder_outputs(refresh=True)
            chain = await self.chain_from(chain.head)
        chain.refuse_if_incompatible()
        return chain

    # -- running a chain --

    async def _encode_for(self, chain: Chain, texts: list[str]) -> tuple[Chain, Encoded]:
        """Encode for the chain's root. An answer under another contract id means the encoder changed:
        re-read its contracts, re-check the chain, and refuse if it no longer fits."""
        root = chain.root
        assert isinstance(root.source, EncoderSource) and root.producer_id is not None
        encoded = await self.encoder.encode(list(texts), root.source.output)
        if encoded.contract_id != root.producer_id:
            await self._reread_outputs(encoded.contract_id)
            chain = await self.chain_from(chain.head)
            chain.refuse_if_incompatible()
            root = chain.root
            if encoded.contract_id != root.producer_id:
                raise UpstreamUnavailable(
                    f"{self.encoder.name} answered under contract {encoded.contract_id[:12]} but lists "
                    f"{(root.producer_id or '?')[:12]} for {root.source.output}: is it restarting? retry",
                    upstream=self.encoder.name, stage=f"encode {root.source.output}",
                )
        assert root.produced is not None
        width = _width(encoded.tensor)
        if width != root.produced.dim:
            raise self.encoder.bad(
                f"encode {root.source.output}", f"{width}-wide vectors where its contract says {root.produced.dim}"
            )
        return chain, encoded

    async def _run(self, chain: Chain, texts: Sequence[str]) -> tuple[Chain, Predicted, list[bool]]:
        chain, encoded = await self._encode_for(chain, list(texts))
        features: Tensor = encoded.tensor
        predicted: Predicted | None = None
        for link in chain.links:
            predicted = await self.classifier.predict(link.model, features)
            features = predicted.probabilities
        assert predicted is not None
        return chain, predicted, encoded.truncated

    async def _run_rows(self, chain: Chain, texts: list[str]) -> tuple[tuple[Chain, list[str]], list[tuple[str, list[float], bool]]]:
        """``_run`` for the coalescer: one (label, probabilities, truncated) row per text."""
        chain, predicted, truncated = await self._run(chain, texts)
        rows = list(zip(predicted.labels, predicted.probabilities.tolist(), truncated))
        return (chain, predicted.classes), rows

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

    async def predict(self, name: str, texts: list[str], version: int | None = None) -> dict[str, Any]:
        check_name(name)
        check_texts(texts, max_texts=self.settings.max_texts, setting="GATEWAY_MAX_TEXTS")
        chain = await self.runnable_chain(name, version)
        try:
            # Requests for the same version arriving together share one encoder and one classifier call.
            (chain, classes), rows = await self.coalescer.submit(chain.head.identity, chain, texts)
        except UpstreamRejected as exc:
            if exc.status == 404:  # deleted since it was resolved
                self._forget(name)
            raise
        return {
            "name": chain.head.name,
            "version": chain.head.version,
            "predictions": [
                {"label": label, "probabilities": dict(zip(classes, row)), "truncated": cut}
                for label, row, cut in rows
            ],
        }

    async def _encoder_features(self, output: str, texts: list[str]) -> tuple[TensorContract, Tensor, int]:
        """Encode a training set in chunks, all under one contract (the one the fit records)."""
        chunks = _chunks(texts, self.settings.train_chunk_size)
        for attempt in range(2):
            outputs = await self.encoder_outputs()
            offered = outputs.outputs.get(output)
            if offered is None:  # the cache may predate a restart with another model: ask before refusing
                outputs = await self.encoder_outputs(refresh=True)
                offered = outputs.outputs.get(output)
            if offered is None:
                raise OutputUnavailable(
                    f"{self.encoder.name} (model {outputs.model}) has no {output} output; it offers "
                    f"{', '.join(sorted(outputs.outputs))}",
                    output=output,
                )
            encoded = await self._gather([lambda c=c: self.encoder.encode(list(c), output) for c in chunks])
            ids = {e.contract_id for e in encoded}
            if ids != {offered.id}:
                outputs = await self._reread_outputs(next(iter(ids - {offered.id})))
                offered = outputs.outputs.get(output)
                if offered is None or ids != {offered.id}:
                    if attempt == 0:
                        continue  # the encoder changed mid-way: encode everything again under one contract
                    raise UpstreamUnavailable(
                        f"{self.encoder.name} changed its contract while the training set was encoded; retry",
                        upstream=self.encoder.name, stage=f"encode {output}",
                    )
            features = _concat([e.tensor for e in encoded])
            if _width(features) != offered.contract.dim:
                raise self.encoder.bad(
                    f"encode {output}", f"{_width(features)}-wide vectors where its contract says {offered.contract.dim}"
                )
            return offered.contract, features, sum(sum(e.truncated) for e in encoded)
        raise AssertionError("unreachable")

    async def _pipeline_features(self, base: str, texts: list[str]) -> tuple[TensorContract, Tensor, int, ModelVersion]:
        chain = await self.runnable_chain(base, fresh=True)
        chunks = _chunks(texts, self.settings.train_chunk_size)
        runs = await self._gather([lambda c=c: self._run(chain, c) for c in chunks])
        features = np.concatenate([predicted.probabilities for _, predicted, _ in runs], axis=0)
        truncated = sum(sum(cut) for _, _, cut in runs)
        return pipeline_contract(chain.head), features, truncated, chain.head

    async def train(
        self,
        name: str,
        texts: list[str],
        labels: list[str],
        estimator: str | None,
        feature: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        check_name(name)
        source = parse_feature(feature)
        if len(texts) != len(labels):
            raise InvalidInput(f"{len(texts)} texts but {len(labels)} labels: one label per text")
        check_texts(texts, max_texts=self.settings.max_train_texts, setting="GATEWAY_MAX_TRAIN_TEXTS")
        if isinstance(source, PipelineSource):
            if source.name == name:
                raise InvalidInput(f"pipeline {name} cannot be fed by its own probabilities; name another pipeline")
            contract, features, truncated, base = await self._pipeline_features(source.name, texts)
            source = PipelineSource(base.name, base.version)
        else:
            contract, features, truncated = await self._encoder_features(source.output, texts)
        meta = {
            "labels": labels,
            "contract": contract.model_dump(mode="json"),
            "estimator": estimator,
            "params": params,
            "source": source.as_dict(),
        }
        record = await self.classifier.fit(name, features, meta, timeout_s=self.settings.fit_timeout_s)
        self._remember(record, latest=True)
        return {
            "name": record.name,
            "version": record.version,
            "estimator": record.estimator,
            "params": record.params,
            "feature": feature,
            "source": record.source,
            "input_contract": record.input_contract.model_dump(mode="json"),
            "classes": record.classes,
            "metrics": record.metrics,
            "truncated_texts": truncated,
            "created_at": record.created_at,
        }

    async def pipeline_report(self, name: str) -> dict[str, Any]:
        check_name(name)
        await self.encoder_outputs(refresh=True)  # a report tells how things stand now
        return (await self.chain(name, fresh=True)).report()  # records read again too

    async def pipelines_report(self) -> dict[str, Any]:
        await self.encoder_outputs(refresh=True)
        reports = []
        for record in await self.classifier.models():
            self._remember(record, latest=True)
            reports.append((await self.chain_from(record, fresh=True)).report())
        return {"pipelines": sorted(reports, key=lambda r: r["name"])}

    async def readiness(self) -> dict[str, Any]:
        """Both upstreams answer /readyz and the encoder's contracts are loaded; NotReady names who fails."""
        encoder_ok, classifier_ok = await asyncio.gather(
            self.encoder.ready(), self.classifier.ready(), return_exceptions=True
        )
        failing: dict[str, str] = {}
        for upstream, result in ((self.encoder, encoder_ok), (self.classifier, classifier_ok)):
            if isinstance(result, SeamError):
                failing[upstream.role] = result.detail
            elif isinstance(result, BaseException):
                raise result
        outputs = None
        if "encoder" not in failing:
            try:
                outputs = await self.encoder_outputs(refresh=True)
            except SeamError as exc:
                failing["encoder"] = f"contracts not loaded: {exc.detail}"
        if failing or outputs is None:
            raise NotReady(
                "not ready: " + "; ".join(failing.values()),
                headers={"Retry-After": "2"},
                upstreams={role: failing.get(role, "ready") for role in ("encoder", "classifier")},
            )
        return {
            "status": "ready",
            "encoder": {"url": self.encoder.url, "model": outputs.model,
                        "outputs": {name: o.id for name, o in outputs.outputs.items()}},
            "classifier": {"url": self.classifier.url},
        }
