"""The gateway's operations, with no HTTP framework in them: predict, evaluate, train, delete, the
reports and readiness. Each concern they use has its own room:

- ``gateway.chains``: a pipeline's chain of checked links, resolved from the records of
  ``gateway.catalog`` (version records and check results, cached), routed to an encoder by
  ``gateway.routing`` (with ``gateway.acceptance`` measuring an encoder that computes the same space
  differently), the encoders' contracts held by ``gateway.encoders``;
- ``gateway.coalescing``: concurrent predicts of one version share the upstream calls;
- near-ties: where the encoder computes in bfloat16, a label its rounding could have decided is
  decided again from float32 vectors (``GATEWAY_NEAR_TIE_MARGIN``);
- ``gateway.training``: a new version's features, encoded under one contract, and its fit.

The results are typed; ``gateway.schemas`` renders the public JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from prometheus_client import Counter

from gateway.acceptance import AcceptanceMeter
from gateway.aliases import PRODUCTION, AliasBook
from gateway.catalog import Catalog
from gateway.chains import Chain, Chains, EncoderSource
from gateway.chunks import chunks, gather, width
from gateway.coalescing import Coalescer
from gateway.deadlines import Progress, out_of_time, tracked
from gateway.drift import DriftMonitor
from gateway.encoders import EncoderRegistry, readiness
from gateway.routing import Router, refuse_if_unreachable
from gateway.settings import GatewaySettings
from gateway.training import Trainer, check_answers
from gateway.upstreams import ClassifierClient, Encoded, Predicted, UpstreamRejected
from services.codecs import Tensor
from services.errors import InvalidInput, PipelineNotFound, UpstreamUnavailable
from services.inputs import check_name, check_texts
from services.scoring import classification_report, regression_report

log = logging.getLogger("seam.gateway")


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


@dataclass(frozen=True)
class Predictions:
    """A predict's answer: the version that served it and one row per text."""

    name: str
    version: int
    classes: list[str]
    rows: list[Row]


class GatewayRuntime:
    """The operations over the upstreams. Built by the app's lifespan, one per process."""

    def __init__(self, settings: GatewaySettings, encoders: EncoderRegistry, classifier: ClassifierClient, *,
                 drift: DriftMonitor | None = None, near_ties: Counter | None = None) -> None:
        self.settings = settings
        self.encoders = encoders
        self.classifier = classifier
        self.catalog = Catalog(settings, classifier)
        self.meter = AcceptanceMeter(settings, classifier)
        self.router = Router(encoders, self.meter, self.catalog.checked)
        self.chains = Chains(settings, self.catalog, encoders, self.router)
        self.aliases = AliasBook(classifier, self.catalog.latest, self.catalog.forget)
        self.trainer = Trainer(settings, encoders, classifier, self.catalog, self.chains, self.run_all)
        self.drift = drift or DriftMonitor(settings.drift_window)
        self.near_ties = near_ties  # texts decided again in float32 (a metric), when one is given
        self._last_threshold: float | None = None
        self.coalescer: Coalescer[Row] = Coalescer(
            self._run_rows, max_texts=settings.max_texts, max_in_flight=settings.coalesce_max_in_flight
        )

    async def warm(self) -> None:
        """At start, best effort: the contracts are read on first use anyway."""
        await self.encoders.warm()

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
            chain = await self.chains.chain_from(chain.head)
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
        wide = width(encoded.tensor)
        if wide != root.produced.dim:
            raise encoder.bad(f"encode {root.source.output}", f"{wide}-wide vectors where its contract says {root.produced.dim}")
        return chain, encoded

    async def _run(self, chain: Chain, texts: Sequence[str]) -> tuple[Chain, Predicted, list[bool]]:
        chain, encoded = await self._encode_for(chain, list(texts))
        return chain, await self._links(chain, encoded.tensor), encoded.truncated

    async def _links(self, chain: Chain, features: Tensor) -> Predicted:
        """The chain's versions, one after the other, on the root's features."""
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
        return predicted

    def _near_tie_margin(self, chain: Chain) -> float | None:
        """The margin within which a label of ``chain`` is decided again in float32; None where none is:
        a regressor, ``GATEWAY_NEAR_TIE_MARGIN=0``, or an encoder that computes in float32 already.

        It is ``GATEWAY_NEAR_TIE_MARGIN`` (bfloat16 moves a MiniLM logistic regression's margins by at most
        0.004), and at least four times the largest probability change measured on the version's
        reference sample (``gateway.acceptance``): a version that bfloat16 moves further gets a wider one."""
        root, margin = chain.root, self.settings.near_tie_margin
        if margin <= 0 or chain.head.regression or root.produced is None or root.produced.dtype == "float32":
            return None
        measured = root.route.chosen.measurement if root.route is not None and root.route.chosen is not None else None
        if measured is not None:  # a margin moves by up to twice a probability's change
            margin = max(margin, 4 * measured.max_probability_change)
        return margin

    async def _near_ties(self, chain: Chain, texts: Sequence[str], probabilities: np.ndarray, margin: float
                         ) -> tuple[list[int], Predicted] | None:
        """The rows whose two highest ``probabilities`` are within ``margin`` (``_near_tie_margin``) could
        have been decided by the encoder's rounding: their indices, and the chain's answer for their texts
        encoded again in float32, as the model computes as loaded and as versions are fitted
        (``gateway.training``). None where there are none, or the encoder offers no float32 (the measured
        acceptance vetted it); a float32 answer that follows no listed contract is refused."""
        root = chain.root
        top = np.sort(probabilities, axis=1)[:, -2:]
        near = np.flatnonzero(top[:, -1] - top[:, 0] < margin).tolist() if top.shape[1] == 2 else []
        assert isinstance(root.source, EncoderSource) and root.encoder is not None
        output = root.source.output
        if not near or (offered := (await self.encoders.outputs(root.encoder)).float32.get(output)) is None:
            return None
        encoder = self.encoders.client(root.encoder)
        encoded = await encoder.encode([texts[i] for i in near], output, float32=True)
        if encoded.contract_id != offered.id:
            await self.encoders.reread(root.encoder, encoded.contract_id)
            raise UpstreamUnavailable(
                f"{encoder.name} answered in float32 under contract {encoded.contract_id[:12]}, not the "
                f"{offered.id[:12]} it lists for {output}: is it restarting? retry",
                upstream=encoder.name, stage=f"encode {output} in float32",
            )
        if width(encoded.tensor) != offered.contract.dim:
            raise encoder.bad(f"encode {output} in float32",
                              f"{width(encoded.tensor)}-wide vectors where its contract says {offered.contract.dim}")
        if self.near_ties is not None:
            self.near_ties.inc(len(near))
        return near, await self._links(chain, encoded.tensor)

    async def _run_decided(self, chain: Chain, texts: Sequence[str]) -> tuple[Chain, Predicted, list[bool]]:
        """``_run``, with its near-ties decided in float32 (``_near_ties``)."""
        chain, predicted, truncated = await self._run(chain, texts)
        margin = self._near_tie_margin(chain)
        found = None if margin is None else await self._near_ties(chain, texts, predicted.probabilities, margin)
        if found is None:
            return chain, predicted, truncated
        near, again = found
        probabilities = predicted.probabilities.copy()
        probabilities[near] = again.probabilities
        labels, ood, inside = list(predicted.labels), predicted.ood, predicted.in_distribution
        scored = ood is not None and inside is not None and again.ood is not None and again.in_distribution is not None
        if scored:
            ood, inside = list(ood), list(inside)
        for row, i in enumerate(near):
            labels[i] = again.labels[row]
            if scored:
                ood[i], inside[i] = again.ood[row], again.in_distribution[row]
        return chain, replace(predicted, probabilities=probabilities, labels=labels, ood=ood, in_distribution=inside), truncated

    async def run_all(self, chain: Chain, texts: Sequence[str], size: int) -> list[tuple[Chain, Predicted, list[bool]]]:
        """``_run_decided`` over many texts, in chunks of ``size``, at most ``train_concurrency`` at once."""
        return await gather([lambda c=c: self._run_decided(chain, c) for c in chunks(texts, size)],
                            self.settings.train_concurrency)

    async def _run_rows(self, chain: Chain, texts: list[str]) -> tuple[tuple[Chain, list[str], float | None], list[Row]]:
        """``_run`` for the coalescer: one :class:`Row` per text (near-ties are decided per request, after)."""
        chain, predicted, truncated = await self._run(chain, texts)
        return (chain, predicted.classes, predicted.ood_threshold), self._rows(chain, predicted, truncated)

    @staticmethod
    def _rows(chain: Chain, predicted: Predicted, truncated: list[bool]) -> list[Row]:
        n = len(truncated)
        ood = predicted.ood or [None] * n
        inside = predicted.in_distribution or [None] * n
        if chain.head.regression:
            return [Row(None, None, float(v), cut, s, ok) for v, cut, s, ok in zip(predicted.values.tolist(), truncated, ood, inside)]
        return [Row(label, p, None, cut, s, ok) for label, p, cut, s, ok in
                zip(predicted.labels, predicted.probabilities.tolist(), truncated, ood, inside)]

    # -- the operations --

    async def predict(self, name: str, texts: list[str], version: int | None = None, alias: str | None = None) -> Predictions:
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
        return Predictions(chain.head.name, chain.head.version, classes, rows)

    async def _submit(
        self, chain: Chain, texts: list[str], deadline: float | None = None, progress: Progress | None = None
    ) -> tuple[Chain, list[str], list[Row]]:
        # Requests for the same version arriving together share one encoder and one classifier call.
        (chain, classes, threshold), rows = await self.coalescer.submit(
            chain.head.identity, chain, texts, deadline=deadline, progress=progress
        )
        if threshold is not None:
            self._last_threshold = threshold
        # Near-ties per request, after the shared run: a request without any is answered at once.
        margin = self._near_tie_margin(chain)
        if margin is not None and rows:
            found = await self._near_ties(chain, texts, np.array([row.probabilities for row in rows]), margin)
            if found is not None:
                near, again = found
                rows = list(rows)
                for i, row in zip(near, self._rows(chain, again, [rows[i].truncated for i in near])):
                    rows[i] = row
        return chain, classes, rows

    async def evaluate(
        self, name: str, texts: list[str], labels: list[str] | None, targets: list[Any] | None, version: int | None = None
    ) -> dict[str, Any]:
        """Predicts ``texts`` as predict does (in batches of ``max_texts``, through the coalescer) and
        scores the predictions against ``labels`` (a classifier) or ``targets`` (a regressor)."""
        check_name(name)
        check_texts(texts, max_texts=self.settings.max_evaluate_texts, setting="GATEWAY_MAX_EVALUATE_TEXTS")
        chain = await self.chains.runnable_chain(name, version)
        head = chain.head
        targets = check_answers(texts, labels, targets)
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
        runs = await gather([lambda c=c: self._submit(chain, list(c)) for c in chunks(texts, self.settings.max_texts)],
                            self.settings.train_concurrency)
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
        head = await (self.catalog.version(name, version) if version is not None else self.catalog.latest(name))
        return self.drift.report(head.name, head.version)

    async def _predict(
        self, name: str, texts: list[str], version: int | None, deadline: float, progress: Progress
    ) -> tuple[Chain, list[str], list[Row]]:
        chain = await self.chains.runnable_chain(name, version)
        try:
            return await self._submit(chain, texts, deadline, progress)
        except UpstreamRejected as exc:
            if exc.status != 404:
                raise
        # A cached record is gone (deleted since it was resolved): the answer must be the one for the store
        # as it is, not for the cache, so resolve again from the classifier: 404 for a deleted pipeline, 409
        # for one whose base is gone, or the new state, run once more.
        progress.follows = None
        for link in chain.links:
            self.catalog.forget(link.model.name)
        chain = await self.chains.runnable_chain(name, version, fresh=True)
        return await self._submit(chain, texts, deadline, progress)

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
            self.catalog.forget(name)

    async def pipeline_report(self, name: str) -> dict[str, Any]:
        check_name(name)
        await self._refresh_for_report()
        aliases = await self.aliases.get(name, fresh=True)
        # The version served by default: production when set, else the latest; records read again too.
        report = (await self.chains.chain(name, aliases.get(PRODUCTION), fresh=True)).report()
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
            self.catalog.remember(record, latest=True)
            aliases = await self.aliases.get(record.name, fresh=True)
            served = aliases.get(PRODUCTION)
            if served is not None and served != record.version:
                record = await self.catalog.version(record.name, served, fresh=True)
            reports.append({**(await self.chains.chain_from(record, fresh=True)).report(), "aliases": aliases})
        return {"pipelines": sorted(reports, key=lambda r: r["name"])}

    async def readiness(self) -> dict[str, Any]:
        """The classifier and at least one encoder ready; NotReady names who fails (``gateway.encoders``)."""
        return await readiness(self.encoders, self.classifier)

    async def encoders_report(self) -> dict[str, Any]:
        """``GET /v1/encoders``: each registered encoder, its readiness, model and outputs."""
        return {"encoders": await self.encoders.status()}
