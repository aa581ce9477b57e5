"""The upgrade path: move aliases, refit a pipeline on another encoder from its kept texts, compare versions.

- **Aliases** (``gateway.aliases``): moving one checks the version first: an alias never points at a
  version no registered encoder can serve (409 with every encoder's mismatches).
- **Refit**: the pipeline's chain, from the bottom: its encoder-fed base fitted again from its kept
  training texts through the named encoder (same estimator, params and feature kind), then each consumer
  on the new base version's probabilities. Each new version is compared with the old one: the encoder and
  the cross-validated accuracy of each, and the label agreement of the old version (on its encoder) and
  the new one (on the new encoder) over the kept texts. The fits go through the train path
  (``gateway.training``): the same limits, chunked encoding and timeouts.
  A refit never changes what is served by itself: a pipeline without a ``production`` alias gets one on
  the version it serves now (before anything is fitted); ``promote`` moves ``production`` to the new
  versions once every one was fitted and passed its own check.
- **Compare**: two versions (or aliases) of one pipeline on the same texts, each on its own encoder, at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.aliases import PRODUCTION
from gateway.chains import Chain, EncoderSource, parse_source
from gateway.runtime import GatewayRuntime
from gateway.upstreams import UpstreamRejected
from services.errors import Conflict, InvalidInput, SeamError
from services.inputs import check_alias, check_labels, check_name, check_texts
from services.wire import VersionRecord


class NotRefittable(Conflict):
    """A version in the chain kept no training texts, or its chain cannot be followed."""

    title, slug = "Cannot be refitted", "not-refittable"


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over every class seen in either the labels or the predictions (scikit-learn's macro average)."""
    t, p = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    scores = []
    for cls in sorted(set(truth) | set(predicted)):
        tp = float(np.sum((t == cls) & (p == cls)))
        fp = float(np.sum((t != cls) & (p == cls)))
        fn = float(np.sum((t == cls) & (p != cls)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return round(float(np.mean(scores)), 6) if scores else 0.0


def _agreement(a: Sequence[str], b: Sequence[str]) -> float:
    return round(float(np.mean(np.asarray(a, dtype=object) == np.asarray(b, dtype=object))), 6) if len(a) else 1.0


class Upgrader:
    """The upgrade operations over one gateway's runtime (its caches, encoders and classifier)."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.aliases = runtime.aliases

    # -- aliases --

    async def served(self, name: str) -> int:
        """The version a plain predict serves now: ``production`` when set, else the latest."""
        production = (await self.aliases.get(name, fresh=True)).get(PRODUCTION)
        return production if production is not None else (await self.runtime.catalog.latest(name, fresh=True)).version

    async def move_alias(self, name: str, alias: str, version: int, *, expected: int | None = None) -> dict[str, Any]:
        """Points ``alias`` at ``version`` once that version's chain is served by some registered encoder
        (409 with the mismatches otherwise, 503 when the encoder it needs is down)."""
        check_name(name)
        check_alias(alias)
        chain = await self.runtime.chains.runnable_chain(name, version, fresh=True)
        aliases = await self.aliases.move(name, alias, version, expected=expected)
        return {"name": name, "alias": alias, "version": version, "encoder": chain.root.encoder, "aliases": aliases}

    async def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        return {"name": name, "aliases": await self.aliases.remove(name, alias)}

    async def list_aliases(self, name: str) -> dict[str, Any]:
        await self.runtime.catalog.latest(name, fresh=True)  # 404 for a pipeline that does not exist
        return {"name": name, "aliases": await self.aliases.get(name, fresh=True)}

    # -- running a version over many texts --

    async def _labels(self, chain: Chain, texts: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
        """Labels and probabilities of ``chain`` for ``texts``, in chunks of GATEWAY_MAX_TEXTS."""
        runs = await self.runtime.run_all(chain, texts, self.settings.max_texts)
        labels = [label for _, predicted, _ in runs for label in predicted.labels]
        probabilities = np.concatenate([predicted.probabilities for _, predicted, _ in runs], axis=0)
        return labels, probabilities, chain.head.classes

    # -- refit --

    async def _training_data(self, record: VersionRecord) -> tuple[list[str], list[str]]:
        stage = f"read the training data of {record.name} v{record.version}"
        try:
            response = await self.runtime.classifier.request(
                stage, "GET", f"/v1/models/{record.name}/versions/{record.version}/training-data")
        except UpstreamRejected as exc:
            if exc.status == 404:
                raise NotRefittable(self._no_texts(record), pipeline=record.name, version=record.version) from exc
            raise
        body = response.json()
        try:
            texts, labels = [str(t) for t in body["texts"]], [str(label) for label in body["labels"]]
        except (KeyError, TypeError) as exc:
            raise self.runtime.classifier.bad(stage, f"not training data: {exc}") from exc
        if len(texts) != len(labels) or not texts:
            raise self.runtime.classifier.bad(stage, f"{len(texts)} texts for {len(labels)} labels")
        return texts, labels

    @staticmethod
    def _no_texts(record: VersionRecord) -> str:
        return (f"pipeline {record.name} v{record.version} kept no training texts (trained with \"retain_texts\": false, "
                "or before seam kept them), so it cannot be refitted: train it again through the gateway on the new "
                "encoder from your own copy of the data")

    async def refit(self, name: str, encoder: str, version: int | None = None, *, promote: bool = False,
                    reuse: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
        """New versions of ``name``'s chain on ``encoder``, bottom-up, each compared with the version it replaces.
        ``reuse`` maps (pipeline, old version) to a version already refitted (``seam migrate`` refits shared
        bases once)."""
        check_name(name)
        target = self.runtime.encoders.get(encoder).name  # UnknownEncoder: 422 listing them
        reuse = dict(reuse or {})
        if version is None:
            version = await self.served(name)
        chain = await self.runtime.chains.chain(name, version, fresh=True)
        records = [link.model for link in chain.links]
        root = chain.links[0]
        try:
            root_source = parse_source(root.model.source)
        except ValueError as exc:
            raise NotRefittable(f"pipeline {root.model.name} v{root.model.version} cannot be refitted: {exc}") from exc
        if not isinstance(root_source, EncoderSource):  # a deleted base, or a loop: the chain stops short
            why = "; ".join(m.message for m in root.mismatches) or "its chain does not start at an encoder"
            raise NotRefittable(f"pipeline {name} v{version} cannot be refitted: {why}", pipeline=name, version=version)
        todo = [r for r in records if (r.name, r.version) not in reuse]
        for record in todo:  # refused before anything is fitted
            if not getattr(record, "retained", None):
                raise NotRefittable(self._no_texts(record), pipeline=record.name, version=record.version)
        data = {(r.name, r.version): await self._training_data(r) for r in todo}
        await self._keep_serving([r.name for r in todo])

        results: list[dict[str, Any]] = []
        base: tuple[str, int] | None = None  # the new version of the link below
        for i, record in enumerate(records):
            key = (record.name, record.version)
            if key in reuse:
                base = (record.name, reuse[key])
                continue
            texts, labels = data[key]
            if i == 0:
                fitted, _ = await self.runtime.trainer.train(
                    record.name, texts, labels, record.estimator, root_source.output, dict(record.params),
                    encoder=target, retain_texts=True)
            else:
                assert base is not None
                fitted, _ = await self.runtime.trainer.train(
                    record.name, texts, labels, record.estimator, f"pipeline:{base[0]}", dict(record.params),
                    retain_texts=True, base_version=base[1])
            base = (record.name, fitted.version)
            results.append(await self._compared(record, fitted, texts))

        promoted = False
        if promote:  # only now: every new version fitted; each passes its own check before production moves
            for result in results:
                moved = await self.move_alias(result["pipeline"], PRODUCTION, result["new_version"])
                result["production"] = moved["version"]
            promoted = True
        return {"name": name, "encoder": target, "promoted": promoted, "pipelines": results,
                "versions": [{"name": r["pipeline"], "version": r["new_version"]} for r in results]}

    async def _keep_serving(self, names: list[str]) -> None:
        """A pipeline without ``production`` serves its latest: pin what it serves now, so that a new version
        is served only once promoted. Compare-and-swap: a concurrent move wins."""
        for name in names:
            if PRODUCTION in await self.aliases.get(name, fresh=True):
                continue
            latest = await self.runtime.catalog.latest(name, fresh=True)
            try:
                await self.aliases.move(name, PRODUCTION, latest.version, expected=0)
            except UpstreamRejected as exc:
                if exc.status != 409:
                    raise

    async def _compared(self, old: VersionRecord, fitted: VersionRecord, texts: list[str]) -> dict[str, Any]:
        new_chain = await self.runtime.chains.runnable_chain(old.name, fitted.version, fresh=True)
        result: dict[str, Any] = {
            "pipeline": old.name, "old_version": old.version, "new_version": fitted.version,
            "old_encoder": None, "new_encoder": new_chain.root.encoder,
            "old_cv_accuracy": old.metrics.get("cv_accuracy"), "new_cv_accuracy": fitted.metrics.get("cv_accuracy"),
            "agreement": None, "agreement_texts": len(texts), "agreement_unavailable": None,
        }
        try:
            old_chain = await self.runtime.chains.runnable_chain(old.name, old.version, fresh=True)
            result["old_encoder"] = old_chain.root.encoder
            (old_labels, _, _), (new_labels, _, _) = await asyncio.gather(
                self._labels(old_chain, texts), self._labels(new_chain, texts))
        except SeamError as exc:  # the old version may no longer be servable (its encoder gone): say so
            result["agreement_unavailable"] = exc.detail
            return result
        result["agreement"] = _agreement(old_labels, new_labels)
        return result

    # -- compare --

    async def _version_of(self, name: str, which: int | str) -> int:
        if isinstance(which, int):
            if which < 1:
                raise InvalidInput(f"version {which} does not exist: versions are numbered from 1", version=which)
            return which
        return await self.aliases.resolve(name, None, check_alias(which))  # type: ignore[return-value]

    async def compare(self, name: str, texts: list[str], labels: list[str] | None, a: int | str, b: int | str) -> dict[str, Any]:
        check_texts(texts, max_texts=self.settings.max_train_texts, setting="GATEWAY_MAX_TRAIN_TEXTS")
        if labels is not None:
            if len(labels) != len(texts):
                raise InvalidInput(f"{len(texts)} texts but {len(labels)} labels: one label per text, or none")
            check_labels(labels, self.settings.max_label_chars)
        va, vb = await asyncio.gather(self._version_of(name, a), self._version_of(name, b))
        chain_a, chain_b = await asyncio.gather(self.runtime.chains.runnable_chain(name, va, fresh=True),
                                                self.runtime.chains.runnable_chain(name, vb, fresh=True))
        (la, pa, _), (lb, pb, _) = await asyncio.gather(self._labels(chain_a, texts), self._labels(chain_b, texts))
        sides = {"a": (a, chain_a, la, pa), "b": (b, chain_b, lb, pb)}
        summary: dict[str, Any] = {}
        for side, (asked, chain, predicted, _) in sides.items():
            summary[side] = {"asked": asked, "version": chain.head.version, "encoder": chain.root.encoder}
            if labels is not None:
                summary[side]["accuracy"] = _agreement(labels, predicted)
                summary[side]["macro_f1"] = macro_f1(labels, predicted)
        rows = [
            {"a": {"label": la[i], "probability": round(float(pa[i].max()), 6)},
             "b": {"label": lb[i], "probability": round(float(pb[i].max()), 6)},
             "agree": la[i] == lb[i], **({"label": labels[i]} if labels is not None else {})}
            for i in range(len(texts))
        ]
        return {"name": name, **summary, "agreement": _agreement(la, lb), "texts": len(texts), "predictions": rows}
