"""In-process pieces of the upgrade path: macro-F1, alias resolution and its cache."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.metrics import f1_score

from gateway.aliases import AliasBook, AliasNotSet
from gateway.upgrade import macro_f1
from services.errors import InvalidInput


@pytest.mark.parametrize("truth,predicted", [
    (["a", "b", "a", "c"], ["a", "b", "b", "c"]),
    (["a", "a", "b"], ["c", "c", "c"]),  # a class only predicted, classes never predicted
    (["x"] * 5, ["x"] * 5),
])
def test_macro_f1_matches_scikit_learn(truth, predicted):
    assert macro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0), abs=1e-6)


class Record:
    def __init__(self, aliases: Any) -> None:
        self.aliases = aliases


class Classifier:
    """The latest record with its aliases, cached for ``ttl`` like Catalog.latest; counts reads."""

    def __init__(self, aliases: dict[str, int] | None, *, ttl: float = 2.0) -> None:
        self.aliases, self.reads, self.ttl, self.now = aliases, 0, ttl, 0.0
        self.cached: tuple[float, Record] | None = None

    async def latest(self, name: str, *, fresh: bool = False) -> Record:
        if self.cached and not fresh and self.cached[0] > self.now:
            return self.cached[1]
        self.reads += 1
        self.cached = (self.now + self.ttl, Record(self.aliases))
        return self.cached[1]

    def forget(self, name: str) -> None:
        self.cached = None

    async def request(self, stage: str, method: str, path: str, **kwargs: Any) -> Any:
        self.aliases = {**(self.aliases or {}), path.rsplit("/", 1)[1]: kwargs["json"]["version"]}
        body = {"aliases": self.aliases}
        return type("Response", (), {"json": lambda self: body})()


def book(classifier: Classifier) -> AliasBook:
    return AliasBook(classifier, classifier.latest, classifier.forget)  # type: ignore[arg-type]


async def test_resolution_order_and_cache():
    classifier = Classifier({"production": 2, "canary": 3})
    aliases = book(classifier)
    assert await aliases.resolve("m", 5, None) == 5  # a version wins, nothing read
    assert classifier.reads == 0
    assert await aliases.resolve("m", None, None) == 2  # production
    assert await aliases.resolve("m", None, "canary") == 3
    assert classifier.reads == 1  # read with the latest record, cached with it
    classifier.aliases = {"production": 4}  # moved through another gateway
    assert await aliases.resolve("m", None, None) == 2  # within the TTL
    classifier.now = 2.5
    assert await aliases.resolve("m", None, None) == 4
    with pytest.raises(AliasNotSet) as unset:
        await aliases.resolve("m", None, "canary")  # read again before refusing
    assert "production (v4)" in unset.value.detail
    with pytest.raises(InvalidInput):
        await aliases.resolve("m", 1, "production")
    with pytest.raises(InvalidInput):
        await aliases.resolve("m", None, "Bad Alias")
    with pytest.raises(InvalidInput):
        await aliases.move("Bad Name", "production", 1)
    await aliases.move("m", "production", 7)
    assert await aliases.resolve("m", None, None) == 7  # its own move at once


async def test_no_aliases_serves_the_latest():
    # A record without aliases (a classifier that predates them): the latest version is served.
    assert await book(Classifier(None)).resolve("m", None, None) is None
