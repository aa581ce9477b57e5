"""The encoders behind one gateway: named clients, each with its cached output contracts.

``GATEWAY_ENCODERS`` registers several (``minilm=http://...,mpnet=http://...``, the first being the
default for training); unset, ``GATEWAY_ENCODER_URL`` is the one encoder, named ``default``. Each
encoder's contracts are read at start, re-read when an encode answer carries a contract id the cache
does not know (the encoder restarted with another model or other settings), when a report or /readyz
asks, and after a refusal at most every ``GATEWAY_RECHECK_INTERVAL_S``. ``generation`` changes whenever
any encoder's contracts change, so what is decided from them (routes) is decided again only then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.settings import DEFAULT_ENCODER
from gateway.upstreams import EncoderClient, Upstream
from services.errors import InvalidInput, NotReady, SeamError
from services.wire import EncoderOutputs

log = logging.getLogger("seam.gateway")


class UnknownEncoder(InvalidInput):
    slug = "unknown-encoder"


class NamedEncoderClient(EncoderClient):
    """An encoder client that says its registered name in every error (the ``default`` one says its URL only,
    as a gateway with one encoder always did)."""

    def __init__(self, key: str, url: str, wire: Any, **limits: Any) -> None:
        super().__init__(url, wire, **limits)
        self.key = key

    @property
    def name(self) -> str:
        return f"encoder {self.url}" if self.key == DEFAULT_ENCODER else f"encoder {self.key} {self.url}"


@dataclass
class EncoderEntry:
    """One registered encoder and what the gateway last read of it."""

    name: str
    client: EncoderClient
    outputs: EncoderOutputs | None = None
    error: str | None = None  # why the last read failed, None after a good one
    failed_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return self.client.url

    def ids(self) -> dict[str, str]:
        if self.outputs is None:
            return {}
        float32 = {f"{name} in float32": o.id for name, o in self.outputs.float32.items()}
        return {**{name: o.id for name, o in self.outputs.outputs.items()}, **float32}


def _outputs(outputs: EncoderOutputs | None) -> dict[str, dict[str, Any]]:
    if outputs is None:
        return {}
    return {name: {"id": o.id, "kind": o.contract.kind, "dim": o.contract.dim, "dtype": o.contract.dtype}
            for name, o in outputs.outputs.items()}


class EncoderRegistry:
    """The named encoders in their registered order, and their contracts."""

    def __init__(self, clients: dict[str, EncoderClient], *, retry_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not clients:
            raise ValueError("a gateway needs at least one encoder")
        self.entries = {name: EncoderEntry(name, client) for name, client in clients.items()}
        self.retry_s = retry_s
        self._clock = clock
        self.generation = 0  # bumped whenever any encoder's contracts change
        self.checked_at = float("-inf")  # the last attempt to read any encoder's contracts

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def default(self) -> str:
        return next(iter(self.entries))

    def get(self, name: str) -> EncoderEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownEncoder(
                f"no encoder named {name!r}: this gateway has {', '.join(self.entries)} (GATEWAY_ENCODERS)",
                encoder=name, encoders=self.names,
            )
        return entry

    def client(self, name: str) -> EncoderClient:
        return self.get(name).client

    # -- contracts --

    async def _read(self, entry: EncoderEntry) -> EncoderOutputs:
        self.checked_at = self._clock()
        try:
            outputs = await entry.client.outputs()
        except SeamError as exc:
            entry.error, entry.failed_at = exc.detail, self._clock()
            raise
        before = entry.ids()
        entry.outputs, entry.error = outputs, None
        if entry.ids() != before:
            self.generation += 1
        return outputs

    async def outputs(self, name: str, *, refresh: bool = False) -> EncoderOutputs:
        """The encoder's contracts, read when not cached or ``refresh``; raises when it cannot be read."""
        entry = self.get(name)
        if entry.outputs is None or refresh:
            async with entry.lock:
                if entry.outputs is None or refresh:
                    await self._read(entry)
        assert entry.outputs is not None
        return entry.outputs

    async def known(self, name: str) -> EncoderOutputs | SeamError:
        """For routing: the cached contracts; an encoder never read yet is tried at most every ``retry_s``
        (a request never waits on an encoder that is known to be down). Returns the error instead of raising."""
        entry = self.get(name)
        if entry.outputs is not None:
            return entry.outputs
        if self._clock() - entry.failed_at < self.retry_s and entry.error is not None:
            return SeamError(entry.error)
        try:
            return await self.outputs(name)
        except SeamError as exc:
            return exc

    async def reread(self, name: str, seen_id: str) -> EncoderOutputs:
        """An encode answer carried ``seen_id``, unknown to the cache: the encoder changed; read it again
        (once, however many requests noticed at the same time)."""
        entry = self.get(name)
        async with entry.lock:
            if entry.outputs is None or seen_id not in entry.ids().values():
                log.info("%s changed its contract (now %s): re-reading its outputs", entry.client.name, seen_id[:12])
                await self._read(entry)
            assert entry.outputs is not None
            return entry.outputs

    async def refresh_all(self) -> dict[str, SeamError | None]:
        """Re-read every encoder at once; each one's error, or None."""
        results = await asyncio.gather(*(self.outputs(n, refresh=True) for n in self.entries), return_exceptions=True)
        errors: dict[str, SeamError | None] = {}
        for name, result in zip(self.entries, results):
            if isinstance(result, SeamError):
                errors[name] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                errors[name] = None
        return errors

    async def warm(self) -> None:
        """At start, best effort: the contracts are read on first use anyway."""
        for name, error in (await self.refresh_all()).items():
            if error is not None:
                log.warning("contracts of encoder %s not loaded at start: %s", name, error.detail)

    # -- readiness and listing --

    async def status(self) -> list[dict[str, Any]]:
        """Each encoder: name, URL, whether it is ready (its /readyz answers and its contracts are read),
        its model and outputs with their contract ids; ``error`` says why one is not ready."""

        async def one(entry: EncoderEntry) -> dict[str, Any]:
            try:
                await entry.client.ready()
                outputs = await self.outputs(entry.name, refresh=True)
            except SeamError as exc:
                known = entry.outputs  # what it served when last seen
                return {"name": entry.name, "url": entry.url, "ready": False, "error": exc.detail,
                        "model": known.model if known else None, "outputs": _outputs(known)}
            return {"name": entry.name, "url": entry.url, "ready": True, "model": outputs.model,
                    "outputs": _outputs(outputs)}

        return list(await asyncio.gather(*(one(entry) for entry in self.entries.values())))


async def readiness(registry: EncoderRegistry, classifier: Upstream) -> dict[str, Any]:
    """The classifier answers /readyz and at least one encoder does with its contracts loaded: its body, each
    encoder reported, ``not_ready`` listing the others. Otherwise NotReady (503) naming who fails."""
    encoders, classifier_ok = await asyncio.gather(registry.status(), classifier.ready(), return_exceptions=True)
    for result in (encoders, classifier_ok):
        if isinstance(result, BaseException) and not isinstance(result, SeamError):
            raise result
    assert isinstance(encoders, list)
    failing = {e["name"]: e["error"] for e in encoders if not e["ready"]}
    problems = [f"{registry.client(n).name}: {why}" for n, why in failing.items()]
    classifier_error = classifier_ok.detail if isinstance(classifier_ok, SeamError) else None
    if classifier_error is not None or len(failing) == len(encoders):
        raise NotReady(
            "not ready: " + "; ".join(problems + ([classifier_error] if classifier_error else [])),
            headers={"Retry-After": "2"},
            upstreams={"encoder": "; ".join(problems) if len(failing) == len(encoders) else "ready",
                       "classifier": classifier_error or "ready"},
            encoders=encoders,
        )
    first = next(e for e in encoders if e["ready"])
    return {
        "status": "ready",
        "encoder": {"name": first["name"], "url": first["url"], "model": first["model"],
                    "outputs": {name: o["id"] for name, o in first["outputs"].items()}},
        "encoders": encoders,
        "not_ready": [f"{n}: {why}" for n, why in failing.items()],
        "classifier": {"url": classifier.url},
    }
