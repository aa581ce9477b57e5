"""The classifier's /docs: every request example works when pasted, in the docs' order (fit first)."""

from __future__ import annotations

from tests.openapi_examples import examples, in_order, send


async def test_every_documented_example_works(client):
    assert (await client.get("/docs")).status_code == 200
    found = in_order(examples(client.app.openapi()), "/fit")
    assert [e.path for e in found if e.method == "POST"][0] == "/v1/models/toy-intents/fit"
    assert {e.path for e in found} >= {"/v1/models/toy-intents/predict", "/v2/models/toy-intents/infer",
                                       "/v1/models/toy-intents"}
    for example in found:
        r = await send(client, example)
        assert r.status_code < 300, (str(example), r.text)
