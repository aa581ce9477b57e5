"""The encoder as a real uvicorn process on 127.0.0.1, spoken to over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.processes import running

pytestmark = pytest.mark.integration


def test_encoder_process_serves_embeddings_and_problems(tiny_classifier, tmp_path):
    with running("encoder_service", {"ENCODER_MODEL": str(tiny_classifier)}, log=tmp_path / "encoder.log") as encoder:
        assert httpx.get(encoder.url + "/healthz").json() == {"status": "alive"}
        r = httpx.post(encoder.url + "/v1/encode", json={"texts": ["hello", "my parcel is late"], "output": "probabilities"})
        assert r.status_code == 200
        np.testing.assert_allclose(np.array(r.json()["data"]).sum(axis=1), 1.0, atol=1e-6)
        bad = httpx.post(encoder.url + "/v1/encode", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"

        async def burst() -> set[int]:
            async with httpx.AsyncClient(base_url=encoder.url) as client:
                replies = await asyncio.gather(
                    *(client.post("/v1/encode", json={"texts": [f"where is parcel {i}"]}) for i in range(32))
                )
            return {reply.status_code for reply in replies}

        assert asyncio.run(burst()) == {200}  # concurrent clients share batched forward passes


@pytest.mark.real_model
def test_default_model_is_minilm(tmp_path):
    with running("encoder_service", {}, log=tmp_path / "encoder.log") as encoder:
        body = httpx.post(encoder.url + "/v1/encode", json={"texts": ["hello world"]}).json()
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(body["data"][0]) == 384
