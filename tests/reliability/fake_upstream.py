"""A misbehaving upstream as a real process: the fakes of tests/gateway/fakes.py served by uvicorn,
with a control route that switches faults on and off while the gateway talks to it.

    FAKE_ROLE=encoder|classifier FAKE_PORT=... python -m tests.reliability.fake_upstream

- ``POST /_fault`` ``{"mode": ..., "slow_text": ..., "delay_s": ...}``: the encoder answers NaN
  vectors (``nan``), vectors wider than its contract (``wide``) or one row too many (``rows``); the
  classifier answers infinite (``inf``) or too few (``rows``) probabilities; ``none`` heals it. An
  encode request whose texts contain ``slow_text`` is answered ``delay_s`` seconds late.
- ``GET /_calls``: requests seen per route.

The classifier starts with one pipeline, ``intents`` v1, fitted on the fake encoder's embedding, so a
restarted classifier serves the same version (same identity) as before.
"""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import numpy as np
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.codecs import BINARY_CONTENT_TYPE, decode_binary, encode_binary
from tests.gateway.fakes import FakeClassifier, FakeEncoder, FakeUpstream

PIPELINE = "intents"
CLASSES = ["account", "billing", "shipping"]


def seeded_classifier() -> FakeClassifier:
    fake = FakeClassifier()
    fake.add(PIPELINE, FakeEncoder().contracts["embedding"], {"type": "encoder", "output": "embedding"}, CLASSES)
    return fake


def encoder_fault(fake: FakeEncoder, mode: str):
    def fault(request: httpx.Request):
        if request.url.path != "/v1/encode":
            return None
        texts = json.loads(request.content)["texts"]
        tensor = fake.features(texts, "embedding")
        if mode == "nan":
            tensor[:, 0] = np.nan
        elif mode == "wide":
            tensor = np.ones((len(texts), fake.dim + 3), np.float32)
        elif mode == "rows":
            tensor = np.concatenate([tensor, tensor[:1]])
        cid = fake.ids["embedding"]
        meta = {"model": fake.model, "output": "embedding", "contract_id": cid, "truncated": [False] * len(texts)}
        return httpx.Response(200, content=encode_binary(tensor, meta),
                              headers={"content-type": BINARY_CONTENT_TYPE, "X-Seam-Contract": cid})

    return fault


def classifier_fault(fake: FakeClassifier, mode: str):
    def fault(request: httpx.Request):
        if not request.url.path.endswith("/predict"):
            return None
        answer = fake.route(request)
        frame = decode_binary(answer.content)
        probabilities = frame.tensor
        if mode == "inf":
            probabilities = np.full_like(probabilities, np.inf)
        elif mode == "rows":
            probabilities = probabilities[:-1]
        return httpx.Response(200, content=encode_binary(probabilities, frame.meta),
                              headers={"content-type": BINARY_CONTENT_TYPE})

    return fault


class FakeServer:
    def __init__(self, role: str) -> None:
        self.role = role
        self.fake: FakeUpstream = FakeEncoder() if role == "encoder" else seeded_classifier()
        self.slow_text: str | None = None
        self.delay_s = 0.0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        body = await request.body()
        if request.url.path == "/_fault":
            self.control(json.loads(body))
            response: Response = JSONResponse({"ok": True})
        elif request.url.path == "/_calls":
            response = JSONResponse(dict(self.fake.calls))
        else:
            if self.slow_text and self.slow_text.encode() in body:
                await asyncio.sleep(self.delay_s)
            outgoing = httpx.Request(request.method, str(request.url), headers=request.headers.raw, content=body)
            answer = await self.fake.handler(outgoing)
            response = Response(answer.content, status_code=answer.status_code,
                                headers={k: v for k, v in answer.headers.items() if k.lower() != "content-length"})
        await response(scope, receive, send)

    def control(self, command: dict) -> None:
        mode = command.get("mode", "none")
        self.slow_text, self.delay_s = command.get("slow_text"), float(command.get("delay_s", 0))
        if mode == "none":
            self.fake.fault = None
        elif self.role == "encoder":
            self.fake.fault = encoder_fault(self.fake, mode)
        else:
            self.fake.fault = classifier_fault(self.fake, mode)


def main() -> None:
    server = FakeServer(os.environ.get("FAKE_ROLE", "encoder"))
    uvicorn.run(server, host=os.environ.get("FAKE_HOST", "127.0.0.1"), port=int(os.environ["FAKE_PORT"]),
                log_level="warning")


if __name__ == "__main__":
    main()
