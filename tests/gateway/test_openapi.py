"""The gateway's /docs: every request example works when pasted after `make run` (which trains the demo
pipeline support-intents), against the real encoder and classifier wired in process."""

from __future__ import annotations

from tests.openapi_examples import examples, in_order, send
from tests.support import train


async def test_every_documented_example_works(gateway):
    await train(gateway, "support-intents", "embedding", "logistic_regression")  # what `make run` does
    assert (await gateway.get("/docs")).status_code == 200
    found = in_order(examples((await gateway.get("/openapi.json")).json()), "/train")
    assert {e.path for e in found} >= {"/v1/pipelines/my-intents/train", "/v1/pipelines/support-intents/predict",
                                       "/v1/pipelines/support-intents"}
    for example in found:
        r = await send(gateway, example)
        assert r.status_code < 300, (str(example), r.text)
