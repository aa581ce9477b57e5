"""The encoder's /docs: every request example works when pasted."""

from __future__ import annotations

from encoder_service.loading import DEFAULT_MODEL_ID
from tests.support import encoder_client
from tests.openapi_examples import examples, in_order, send


async def test_every_documented_example_works(tiny_bert):
    # The tiny model under the default model's id: the OpenAI example names the default model.
    async with encoder_client(model=str(tiny_bert), model_id=DEFAULT_MODEL_ID) as client:
        assert (await client.get("/docs")).status_code == 200
        found = in_order(examples(client.app.openapi()))
        assert {e.path for e in found} >= {"/v1/encode", "/v1/embeddings", "/v2/models/embedding/infer"}
        for example in found:
            r = await send(client, example)
            assert r.status_code < 300, (str(example), r.text)
