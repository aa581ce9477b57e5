"""Training through the gateway: a new version fitted on a feature of the texts.

An encoder feature is encoded in chunks on one encoder, all under one contract (the one the fit
records): an encoder that changes its contract mid-way gets the whole set once more. It is encoded in
float32 where the encoder offers it (one serving bfloat16 does): a version is fitted on the vectors
as the model computes them as loaded, whatever precision then serves it (``gateway.acceptance``
measures a bfloat16 encoder against it; near-ties are decided in float32, ``gateway.runtime``). A
``pipeline:<name>`` feature is that pipeline's probabilities, run through its chain. Either way the
features go to the classifier's fit with their contract and the version's source.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from gateway.catalog import Catalog
from gateway.chains import Chain, Chains, EncoderSource, PipelineSource, parse_feature, pipeline_contract
from gateway.chunks import chunks, concat, gather, width
from gateway.encoders import EncoderRegistry
from gateway.settings import DEFAULT_ENCODER, GatewaySettings
from gateway.upstreams import ClassifierClient, Encoded, EncoderClient, Predicted
from services.codecs import Tensor
from services.contracts import TensorContract
from services.errors import InvalidInput, OutputUnavailable, UpstreamUnavailable
from services.inputs import check_labels, check_name, check_texts
from services.wire import EncoderOutput, VersionRecord

# Runs a chain over many texts, in chunks: (chain, predicted, truncated) per chunk (GatewayRuntime.run_all).
RunAll = Callable[[Chain, Sequence[str], int], Awaitable[list[tuple[Chain, Predicted, list[bool]]]]]


class Trainer:
    """Fits new versions: checks the request, computes the features, sends the fit, remembers the record."""

    def __init__(self, settings: GatewaySettings, encoders: EncoderRegistry, classifier: ClassifierClient,
                 catalog: Catalog, chains: Chains, run_all: RunAll) -> None:
        self.settings = settings
        self.encoders = encoders
        self.classifier = classifier
        self.catalog = catalog
        self.chains = chains
        self.run_all = run_all

    async def train(
        self, name: str, texts: list[str], labels: list[str] | None, estimator: str | None, feature: str,
        params: dict[str, Any], encoder: str | None = None, retain_texts: bool = True, base_version: int | None = None,
        *, targets: list[Any] | None = None, preprocess: list[Any] | None = None, calibrate: str | None = None,
    ) -> tuple[VersionRecord, int]:
        """A new version fitted on ``feature`` of ``texts``, and how many texts were cut to the encoder's
        window. An encoder feature comes from ``encoder`` (default: the first registered), recorded in its
        source; a ``pipeline:<name>`` feature comes from ``base_version`` of that pipeline (default: its
        latest). With ``retain_texts`` the texts are kept with the version in the classifier's store, with
        a reference sample for measured acceptance."""
        check_name(name)
        source = parse_feature(feature)
        encoder = self.encoders.get(encoder or self.encoders.default).name  # UnknownEncoder: 422 listing them
        targets = check_answers(texts, labels, targets)  # before any encoding
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
        self.catalog.remember(record, latest=True)  # the fit's answer carries the model's aliases, as /latest does
        return record, truncated

    async def _offered(self, encoder: str, output: str) -> tuple[EncoderOutput, bool]:
        """The encoder's contract for ``output`` computed in float32, and True, where it offers one; else
        its served contract, and False. OutputUnavailable when it serves no such output."""
        outputs = await self.encoders.outputs(encoder)
        if output not in outputs.outputs:  # the cache may predate a restart with another model: ask before refusing
            outputs = await self.encoders.outputs(encoder, refresh=True)
        if output not in outputs.outputs:
            raise OutputUnavailable(
                f"{self.encoders.client(encoder).name} (model {outputs.model}) has no {output} output; it offers "
                f"{', '.join(sorted(outputs.outputs))}",
                output=output, encoder=encoder,
            )
        float32 = outputs.float32.get(output)
        return (float32, True) if float32 is not None else (outputs.outputs[output], False)

    async def _encode_all(self, encoder: str, output: str, texts: list[str]) -> tuple[EncoderOutput | None, list[Encoded]]:
        """Every chunk encoded, and the listed contract they all follow (None: they do not all follow one)."""
        client = self.encoders.client(encoder)
        offered, float32 = await self._offered(encoder, output)
        encoded = await gather([lambda c=c: client.encode(list(c), output, float32)
                                for c in chunks(texts, self.settings.train_chunk_size)], self.settings.train_concurrency)
        ids = {e.contract_id for e in encoded}
        if ids != {offered.id}:  # the encoder changed: read its contracts again
            outputs = await self.encoders.reread(encoder, next(iter(ids - {offered.id})))
            if (output in outputs.float32) != float32:  # float32 offered now, or no longer: once more, as offered
                return None, encoded
            now = (outputs.float32 if float32 else outputs.outputs).get(output)
            return (now if now is not None and ids == {now.id} else None), encoded
        return offered, encoded

    async def _encoder_features(self, encoder: str, output: str, texts: list[str]) -> tuple[TensorContract, Tensor, int]:
        offered, encoded = await self._encode_all(encoder, output, texts)
        if offered is None:  # the contract changed mid-way: everything once more, under one contract
            offered, encoded = await self._encode_all(encoder, output, texts)
        client: EncoderClient = self.encoders.client(encoder)
        if offered is None:
            raise UpstreamUnavailable(
                f"{client.name} changed its contract while the training set was encoded; retry",
                upstream=client.name, stage=f"encode {output}",
            )
        features = concat([e.tensor for e in encoded])
        if width(features) != offered.contract.dim:
            raise client.bad(f"encode {output}", f"{width(features)}-wide vectors where its contract says {offered.contract.dim}")
        return offered.contract, features, sum(sum(e.truncated) for e in encoded)

    async def _pipeline_features(self, base: str, texts: list[str], version: int | None = None
                                 ) -> tuple[TensorContract, Tensor, int, VersionRecord]:
        chain = await self.chains.runnable_chain(base, version, fresh=True)
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
        runs = await self.run_all(chain, texts, self.settings.train_chunk_size)
        features = np.concatenate([predicted.probabilities for _, predicted, _ in runs], axis=0)
        truncated = sum(sum(cut) for _, _, cut in runs)
        return pipeline_contract(chain.head), features, truncated, chain.head


def check_answers(texts: list[str], labels: list[str] | None, targets: list[Any] | None) -> list[float] | None:
    """One label per text (a classifier) or one number per text (a regressor), exactly one of them; the
    targets as floats. The one place this is checked (train and evaluate)."""
    if (labels is None) == (targets is None):
        raise InvalidInput("Send labels (a classifier) or numeric targets (a regressor), one per text, exactly one of them.")
    given = labels if labels is not None else targets or []
    if len(texts) != len(given):
        raise InvalidInput(f"{len(texts)} texts but {len(given)} {'labels' if labels is not None else 'targets'}: one per text")
    for i, label in enumerate(labels or ()):
        if not label.strip():  # " " and "  " would become two classes no one can tell apart
            raise InvalidInput(f"labels[{i}] is blank; every label needs at least one non-space character", index=i)
    return None if targets is None else check_targets(targets)


def check_targets(targets: list[Any]) -> list[float]:
    """Numeric, finite targets; 422 naming the first that is not."""
    out = []
    for i, value in enumerate(targets):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"targets must be numbers: targets[{i}] is {value!r}", index=i)
        if not math.isfinite(value):
            raise InvalidInput(f"targets must be finite numbers: targets[{i}] is {value!r}", index=i)
        out.append(float(value))
    return out
