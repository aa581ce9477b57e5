"""In-process pieces of the upgrade path: macro-F1, alias resolution and its cache."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.metrics import f1_score

from gateway.aliases import AliasBook, AliasNotSet
from gateway.upgrade import macro_f1
from gateway.upstreams import UpstreamRejected
from services.errors import InvalidInput


@pytest.mark.parametrize("truth,predicted", [
    (["a", "b", "a", "c"], ["a", "b", "b", "c"]),
    (["a", "a", "b"], ["c", "c", "c"]),  # a class only predicted, classes never predicted
    (["x"] * 5, ["x"] * 5),
])
def test_macro_f1_matches_scikit_learn(truth, predicted):
    assert macro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0), abs=1e-6)


class Response:
    def __init__(self, body: Any) -> None:
        self.body = body

    def json(self) -> Any:
        return self.body


class Classifier:
    """Answers the alias routes from a dict; counts reads."""

    def __init__(self, aliases: dict[str, int] | None, *, status: int = 200) -> None:
        self.aliases, self.status, self.reads = aliases, status, 0

    async def request(self, stage: str, method: str, path: str, **kwargs: Any) -> Response:
        if self.status != 200:
            raise UpstreamRejected(self.status, {"detail": "no route"}, upstream="classifier", stage=stage)
        if method == "GET":
            self.reads += 1
        else:
            self.aliases = {**(self.aliases or {}), path.rsplit("/", 1)[1]: kwargs["json"]["version"]}
        return Response({"aliases": self.aliases})


async def test_resolution_order_and_cache():
    now = [0.0]
    classifier = Classifier({"production": 2, "canary": 3})
    book = AliasBook(classifier, ttl_s=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await book.resolve("m", 5, None) == 5  # a version wins, nothing read
    assert classifier.reads == 0
    assert await book.resolve("m", None, None) == 2  # production
    assert await book.resolve("m", None, "canary") == 3
    assert classifier.reads == 1  # cached
    classifier.aliases = {"production": 4}  # moved through another gateway
    assert await book.resolve("m", None, None) == 2  # within the TTL
    now[0] = 2.5
    assert await book.resolve("m", None, None) == 4
    with pytest.raises(AliasNotSet) as unset:
        await book.resolve("m", None, "canary")  # read again before refusing
    assert "production (v4)" in unset.value.detail
    with pytest.raises(InvalidInput):
        await book.resolve("m", 1, "production")
    with pytest.raises(InvalidInput):
        await book.resolve("m", None, "Bad Alias")
    await book.move("m", "production", 7)
    assert await book.resolve("m", None, None) == 7  # its own move at once


async def test_no_aliases_anywhere_serves_the_latest():
    assert await AliasBook(Classifier(None), 2.0).resolve("m", None, None) is None  # type: ignore[arg-type]
    # A classifier without the alias routes (older): no aliases, not an error.
    assert await AliasBook(Classifier(None, status=404), 2.0).resolve("m", None, None) is None  # type: ignore[arg-type]
