"""A pipeline's aliases as the gateway sees them: read from the classifier, cached for ``pipeline_ttl_s``.

The classifier keeps them in its store (``classifier_service.aliases``) and sends them with a model's latest
record, so every gateway and every classifier replica sees a move; a gateway sees it within
``GATEWAY_PIPELINE_TTL_S`` (the time it reuses a record; its own moves at once). No extra read per predict.
Which version a predict serves: ``?version=`` when given, else ``?alias=``, else the ``production`` alias
when it is set, else the latest version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.upstreams import ClassifierClient, UpstreamRejected
from services.errors import InvalidInput, NotFound
from services.inputs import check_alias, check_name

PRODUCTION = "production"
Latest = Callable[..., Awaitable[Any]]  # Catalog.latest(name, fresh=...)


class AliasNotSet(NotFound):
    title, slug = "Alias not set", "alias-not-set"


class AliasBook:
    """Reads a pipeline's aliases with its latest record (``GET /v1/models/{name}/latest`` carries them): one
    classifier read, cached with the record for ``pipeline_ttl_s``. Moves go to the classifier at once."""

    def __init__(self, classifier: ClassifierClient, latest: Latest, forget: Callable[[str], None]) -> None:
        self.classifier = classifier
        self._latest = latest
        self._forget = forget

    async def get(self, name: str, *, fresh: bool = False) -> dict[str, int]:
        """The pipeline's aliases (none from a classifier that predates them); 404 for an unknown pipeline."""
        record = await self._latest(name, fresh=fresh)
        return self._parse({"aliases": getattr(record, "aliases", None)})

    @staticmethod
    def _parse(body: Any) -> dict[str, int]:
        aliases = body.get("aliases") if isinstance(body, dict) else None
        if not isinstance(aliases, dict):
            return {}
        return {str(k): v for k, v in aliases.items() if isinstance(v, int) and not isinstance(v, bool)}

    async def resolve(self, name: str, version: int | None, alias: str | None) -> int | None:
        """The version a request names: ``version``, or the alias's, or ``production``'s; None: the latest."""
        if version is not None and alias is not None:
            raise InvalidInput("give a version or an alias, not both", version=version, alias=alias)
        if version is not None:
            return version
        if alias is not None:
            check_alias(alias)
        aliases = await self.get(name)
        if alias is None:
            return aliases.get(PRODUCTION)
        if alias not in aliases:
            aliases = await self.get(name, fresh=True)  # never refuse on the cache: it may predate the move
        if alias not in aliases:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise AliasNotSet(f"pipeline {name!r} has no alias {alias!r}; its aliases: {known}. Set one with PUT "
                              f"/v1/pipelines/{name}/aliases/{alias}", pipeline=name, alias=alias)
        return aliases[alias]

    async def move(self, name: str, alias: str, version: int, *, expected: int | None = None) -> dict[str, int]:
        check_name(name)
        check_alias(alias)
        body: dict[str, Any] = {"version": version, **({"expected": expected} if expected is not None else {})}
        try:
            response = await self.classifier.request(
                f"move alias {alias} of {name}", "PUT", f"/v1/models/{name}/aliases/{alias}", json=body, retry=False)
        finally:
            self._forget(name)  # this gateway sees its own moves at once
        return self._parse(response.json())

    async def remove(self, name: str, alias: str) -> dict[str, int]:
        check_name(name)
        check_alias(alias)
        try:
            response = await self.classifier.request(
                f"remove alias {alias} of {name}", "DELETE", f"/v1/models/{name}/aliases/{alias}", retry=False)
        except UpstreamRejected as exc:
            if exc.status == 404:
                raise AliasNotSet(f"pipeline {name!r} has no alias {alias!r}", pipeline=name, alias=alias) from exc
            raise
        finally:
            self._forget(name)
        return self._parse(response.json())
