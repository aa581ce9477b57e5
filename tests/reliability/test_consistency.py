"""One answer for one state: what the gateway answers about a pipeline depends on the store, never on
how warm its caches are. Records are cached for a long TTL here, so every answer below is given
while the gateway still holds the records of what was deleted."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from tests.support import LABELS, TEXTS, world

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHAIN = (("base", "embedding"), ("dep", "pipeline:base"), ("top", "pipeline:dep"))


async def train(gateway: httpx.AsyncClient, name: str, feature: str) -> httpx.Response:
    body = {"texts": TEXTS, "labels": LABELS, "feature": feature, "estimator": "logistic_regression"}
    return await gateway.post(f"/v1/pipelines/{name}/train", json=body)


async def predict(gateway: httpx.AsyncClient, name: str) -> tuple[int, str]:
    response = await gateway.post(f"/v1/pipelines/{name}/predict", json={"texts": ["where is my parcel"]})
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, response.json()["detail"]
    return 200, ""


@pytest_asyncio.fixture(loop_scope="module")
async def services(tiny_bert, tmp_path):
    async with world(tiny_bert, tmp_path / "models", gateway={"pipeline_ttl_s": 3600}) as w:
        for name, feature in CHAIN:
            assert (await train(w.gateway, name, feature)).status_code == 201
        for name, _ in CHAIN:  # every record cached
            assert await predict(w.gateway, name) == (200, "")
        yield w


async def test_after_a_base_is_deleted_its_dependants_are_409_naming_it_and_it_is_404(services):
    assert (await services.classifier.delete("/v1/models/base")).status_code == 204
    for _ in range(2):  # the first answer (cache warm) and the next (cache re-read) are the same
        status, detail = await predict(services.gateway, "dep")
        assert status == 409 and "pipeline base v1, its source, no longer exists" in detail, detail
        assert "train dep again" in detail
        status, detail = await predict(services.gateway, "top")
        assert status == 409 and "pipeline base v1, its source, no longer exists" in detail, detail
        assert await predict(services.gateway, "base") == (
            404, "no pipeline named 'base': train it with POST /v1/pipelines/base/train")
    # a new pipeline cannot be built on the broken chain either
    response = await train(services.gateway, "more", "pipeline:top")
    assert response.status_code == 409 and "pipeline base v1" in response.json()["detail"]


async def test_a_deleted_pipeline_is_404_at_once_even_when_its_own_base_is_gone(services):
    for name in ("base", "dep"):  # dep's cached record now leads to a base that is gone too
        assert (await services.classifier.delete(f"/v1/models/{name}")).status_code == 204
    for _ in range(2):
        assert await predict(services.gateway, "dep") == (
            404, "no pipeline named 'dep': train it with POST /v1/pipelines/dep/train")
        status, detail = await predict(services.gateway, "top")
        assert status == 409 and "pipeline dep v1, its source, no longer exists" in detail, detail


async def test_a_middle_link_deleted_under_a_warm_cache_is_409_for_its_dependant(services):
    assert (await services.classifier.delete("/v1/models/dep")).status_code == 204
    for _ in range(2):
        status, detail = await predict(services.gateway, "top")
        assert status == 409 and "pipeline dep v1, its source, no longer exists" in detail, detail
        assert await predict(services.gateway, "base") == (200, "")


async def test_a_chain_deeper_than_the_maximum_is_refused_at_train_time_not_on_every_predict(services):
    depth = services.apps["gateway"].state.settings.max_chain_depth
    below = "top"
    for level in range(len(CHAIN) + 1, depth + 1):  # up to the maximum: trains and predicts
        assert (await train(services.gateway, f"level{level}", f"pipeline:{below}")).status_code == 201
        below = f"level{level}"
    assert await predict(services.gateway, below) == (200, "")
    response = await train(services.gateway, "too-deep", f"pipeline:{below}")
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert f"a chain of {depth} links" in response.json()["detail"]
    assert f"maximum depth of {depth} (GATEWAY_MAX_CHAIN_DEPTH)" in response.json()["detail"]
    assert (await predict(services.gateway, "too-deep"))[0] == 404  # nothing was fitted
