"""Which registered encoder serves a version's encoder-fed link.

The version's recorded source names the encoder it was fitted through (``{"type": "encoder", "output":
"embedding", "encoder": "minilm"}``; a record without one was fitted through the first encoder). Its
link is served by, in this order of preference:

1. that encoder, when its output fits the version's input contract exactly;
2. any other registered encoder that fits exactly, in registration order;
3. an encoder serving the same space computed differently (``gateway.acceptance``), accepted by
   measurement: the fitted one first, then the others.

No encoder fits: the link is refused with every candidate's mismatches (both sides named), and the
measurement where one was made. A route is decided once per (version, contracts of every encoder):
``EncoderRegistry.generation`` changes when any contract does, never per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.acceptance import AcceptanceMeter, Measurement, measurable
from gateway.cache import Cache
from gateway.encoders import EncoderRegistry
from services.compatibility import Mismatch
from services.contracts import TensorContract
from services.errors import SeamError, UpstreamUnavailable
from services.wire import EncoderOutput, VersionRecord

NO_REFERENCE = (
    "it kept no reference sample (fitted before seam kept one, or trained with \"retain_texts\": false), so only "
    "an exact match is accepted: train it again through the gateway, or serve the encoder it was fitted on"
)

Check = Callable[[tuple[Any, ...], TensorContract, str, VersionRecord, str], tuple[Mismatch, ...]]


@dataclass(frozen=True)
class Candidate:
    """One registered encoder, weighed for one version's link."""

    encoder: str
    url: str
    producer: str
    offered: EncoderOutput | None = None
    mismatches: tuple[Mismatch, ...] = ()
    measurement: Measurement | None = None
    unavailable: str | None = None  # why its contracts could not be read

    @property
    def exact(self) -> bool:
        return self.offered is not None and not self.mismatches and self.unavailable is None

    @property
    def acceptance(self) -> dict[str, Any] | None:
        if self.exact:
            return {"accepted": "exact"}
        if self.measurement is not None and self.measurement.accepted:
            return self.measurement.report()
        return None

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "encoder": self.encoder, "url": self.url, "producer": self.producer, "acceptance": self.acceptance,
            "mismatches": [m.model_dump(mode="json") for m in self.mismatches],
        }
        if self.measurement is not None:
            report["measurement"] = self.measurement.refusal()
        if self.unavailable is not None:
            report["unavailable"] = self.unavailable
        return report


@dataclass(frozen=True)
class Route:
    """The encoder chosen for a link (None: refused), and every candidate weighed."""

    chosen: Candidate | None
    candidates: tuple[Candidate, ...]

    @property
    def unavailable(self) -> list[Candidate]:
        return [c for c in self.candidates if c.unavailable is not None]

    def mismatches(self) -> tuple[Mismatch, ...]:
        """A refusal's reasons: every candidate's mismatches, its measurement, or why it was not measured."""
        if self.chosen is not None:
            return ()
        found: list[Mismatch] = []
        for c in self.candidates:
            found += c.mismatches
            consumer = c.mismatches[0].consumer if c.mismatches else None
            if c.measurement is not None:
                m = c.measurement
                found.append(Mismatch(
                    field="measured_agreement", expected=m.min_agreement, actual=m.agreement, producer=c.producer,
                    consumer=consumer,
                    message=f"same space computed differently, measured: labels agree on {m.agreement:.4f} of the "
                    f"{m.sample_size}-text reference sample (largest probability change {m.max_probability_change:.4g}), "
                    f"below GATEWAY_MIN_AGREEMENT {m.min_agreement}",
                ))
        return tuple(found)


class Router:
    """Chooses, and remembers, the encoder of every version's encoder-fed link."""

    def __init__(self, registry: EncoderRegistry, meter: AcceptanceMeter, check: Check) -> None:
        self.registry = registry
        self.meter = meter
        self.check = check
        self._routes: Cache[tuple[Any, ...], Route] = Cache()
        self.routes_decided = 0

    def _order(self, fitted: str | None) -> list[str]:
        names = self.registry.names
        if fitted in names:
            return [fitted] + [n for n in names if n != fitted]
        return names

    async def route(self, record: VersionRecord, output: str, fitted: str | None, consumer: str) -> Route:
        key = (record.identity, output, fitted, self.registry.generation)
        found = self._routes.get(key)
        if found is not None:
            return found
        route = await self._decide(record, output, fitted, consumer)
        if route.chosen is not None:  # a refusal is decided again: an encoder may come back or be measured
            self._routes.put((record.identity, output, fitted, self.registry.generation), route)
        return route

    async def _candidate(self, name: str, record: VersionRecord, output: str, consumer: str) -> Candidate:
        entry = self.registry.get(name)
        known = await self.registry.known(name)
        if isinstance(known, SeamError):
            return Candidate(name, entry.url, entry.client.name, unavailable=known.detail)
        producer = f"{entry.client.name} model {known.model} output {output}"
        offered = known.outputs.get(output)
        if offered is None:
            why = f"the encoder serves no {output} output (model {known.model} offers {', '.join(sorted(known.outputs))})"
            mismatch = Mismatch(field="source", expected="a producer to feed it", actual=sorted(known.outputs),
                                message=why, producer=producer, consumer=consumer)
            return Candidate(name, entry.url, producer, mismatches=(mismatch,))
        found = self.check(("encoder", output, offered.id), offered.contract, producer, record, consumer)
        return Candidate(name, entry.url, producer, offered, found)

    async def _decide(self, record: VersionRecord, output: str, fitted: str | None, consumer: str) -> Route:
        self.routes_decided += 1
        order = self._order(fitted)
        candidates = [await self._candidate(order[0], record, output, consumer)]
        if not (fitted == order[0] and candidates[0].exact):
            candidates += [await self._candidate(name, record, output, consumer) for name in order[1:]]
        exact = next((c for c in candidates if c.exact), None)
        if exact is not None:
            return Route(exact, tuple(candidates))
        weighed: list[Candidate] = []
        chosen: Candidate | None = None
        for c in candidates:
            if chosen is None and c.offered is not None and measurable(c.mismatches):
                reference = await self.meter.reference(record)
                if reference is None:
                    c = Candidate(c.encoder, c.url, c.producer, c.offered, c.mismatches + (Mismatch(
                        field="reference_sample", expected="a reference sample kept at fit time", actual=None,
                        message=f"{c.encoder} serves the same space computed differently, but {record.name} "
                        f"v{record.version} " + NO_REFERENCE, producer=c.producer, consumer=consumer),))
                else:
                    client = self.registry.client(c.encoder)
                    measurement = await self.meter.measure(record, client, output, c.offered.id, reference)
                    c = Candidate(c.encoder, c.url, c.producer, c.offered, c.mismatches, measurement)
                    if measurement.accepted:
                        chosen = c
            weighed.append(c)
        return Route(chosen, tuple(weighed))


def refuse_if_unreachable(route: Route | None, head: VersionRecord) -> None:
    """A link no encoder could be routed to while an encoder it may need is down: 503 naming it, not 409."""
    if route is None or route.chosen is not None or not route.unavailable:
        return
    others = route.mismatches()
    raise UpstreamUnavailable(
        f"pipeline {head.name} v{head.version} needs an encoder that is down: "
        + "; ".join(c.unavailable or "" for c in route.unavailable)
        + (f" (the others registered do not fit: {others[0].message})" if others else ""),
        upstream=", ".join(c.producer for c in route.unavailable), stage="read encoder contracts",
        pipeline=head.name, version=head.version, encoders=[c.report() for c in route.candidates],
    )
