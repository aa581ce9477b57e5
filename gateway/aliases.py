"""A pipeline's aliases as the gateway sees them: read from the classifier, cached for ``pipeline_ttl_s``.

The classifier keeps them in its store (``classifier_service.aliases``), so every gateway and every
classifier replica sees a move; a gateway sees it within ``GATEWAY_PIPELINE_TTL_S`` (its own moves at once).
Which version a predict serves: ``?version=`` when given, else ``?alias=``, else the ``production`` alias
when it is set, else the latest version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.upstreams import ClassifierClient, UpstreamRejected
from services.contracts import MODEL_NAME_PATTERN, is_valid_model_name
from services.errors import InvalidInput, NotFound

PRODUCTION = "production"
_MAX_CACHED = 4096


class AliasNotSet(NotFound):
    title, slug = "Alias not set", "alias-not-set"


def check_alias(alias: str) -> str:
    if not is_valid_model_name(alias):
        raise InvalidInput(
            f"{alias!r} is not a valid alias name: aliases match {MODEL_NAME_PATTERN} (lower-case letters, digits, "
            "'_' and '-', at most 64), like pipeline names", alias=alias,
        )
    return alias


class AliasBook:
    def __init__(self, classifier: ClassifierClient, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.classifier = classifier
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._running: dict[str, asyncio.Future[dict[str, int]]] = {}

    def _keep(self, name: str, aliases: dict[str, int]) -> dict[str, int]:
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[name] = (self._clock() + self.ttl_s, aliases)
        return aliases

    @staticmethod
    def _parse(body: Any) -> dict[str, int]:
        aliases = body.get("aliases") if isinstance(body, dict) else None
        if not isinstance(aliases, dict):
            return {}
        return {str(k): v for k, v in aliases.items() if isinstance(v, int) and not isinstance(v, bool)}

    async def get(self, name: str, *, fresh: bool = False) -> dict[str, int]:
        cached = self._cache.get(name)
        if cached and not fresh and cached[0] > self._clock():
            return cached[1]
        # Requests arriving together on an expired entry share one read (and then one merged predict run).
        running = self._running.get(name)
        if running is None:
            running = asyncio.ensure_future(self._read(name))
            self._running[name] = running
            running.add_done_callback(lambda _: self._running.pop(name, None))
        return await asyncio.shield(running)

    async def _read(self, name: str) -> dict[str, int]:
        try:
            response = await self.classifier.request(f"read the aliases of {name}", "GET", f"/v1/models/{name}/aliases")
        except UpstreamRejected as exc:
            if exc.status != 404:
                raise
            # A classifier that predates aliases has no such route: no aliases, the latest version is served.
            return self._keep(name, {})
        return self._keep(name, self._parse(response.json()))

    async def resolve(self, name: str, version: int | None, alias: str | None) -> int | None:
        """The version a request names: ``version``, or the alias's, or ``production``'s; None: the latest."""
        if version is not None and alias is not None:
            raise InvalidInput("give a version or an alias, not both", version=version, alias=alias)
        if version is not None:
            return version
        aliases = await self.get(name)
        if alias is None:
            return aliases.get(PRODUCTION)
        check_alias(alias)
        if alias not in aliases:
            aliases = await self.get(name, fresh=True)  # never refuse on the cache: it may predate the move
        if alias not in aliases:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise AliasNotSet(f"pipeline {name!r} has no alias {alias!r}; its aliases: {known}. Set one with PUT "
                              f"/v1/pipelines/{name}/aliases/{alias}", pipeline=name, alias=alias)
        return aliases[alias]

    async def move(self, name: str, alias: str, version: int, *, expected: int | None = None) -> dict[str, int]:
        check_alias(alias)
        body: dict[str, Any] = {"version": version, **({"expected": expected} if expected is not None else {})}
        response = await self.classifier.request(
            f"move alias {alias} of {name}", "PUT", f"/v1/models/{name}/aliases/{alias}", json=body, retry=False)
        return self._keep(name, self._parse(response.json()))

    async def remove(self, name: str, alias: str) -> dict[str, int]:
        check_alias(alias)
        try:
            response = await self.classifier.request(
                f"remove alias {alias} of {name}", "DELETE", f"/v1/models/{name}/aliases/{alias}", retry=False)
        except UpstreamRejected as exc:
            if exc.status == 404:
                self._cache.pop(name, None)
                raise AliasNotSet(f"pipeline {name!r} has no alias {alias!r}", pipeline=name, alias=alias) from exc
            raise
        return self._keep(name, self._parse(response.json()))
