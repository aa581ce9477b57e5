"""The three apps in one process: the real encoder (a tiny model) and classifier behind the gateway,
wired with ASGI transports. Each app's lifespan runs; every client talks to its app in process."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from fastapi import FastAPI

from classifier_service.app import create_app as create_classifier
from classifier_service.settings import ClassifierSettings
from encoder_service.app import create_app as create_encoder
from encoder_service.settings import EncoderSettings
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings

ENCODER_URL = "http://encoder.local"
CLASSIFIER_URL = "http://classifier.local"


async def wait_loaded(encoder: FastAPI) -> None:
    for _ in range(1200):
        if encoder.state.runtime.ready or encoder.state.load_error:
            break
        await asyncio.sleep(0.05)
    assert encoder.state.runtime.ready, encoder.state.load_error


@dataclass
class World:
    encoder: httpx.AsyncClient
    classifier: httpx.AsyncClient
    gateway: httpx.AsyncClient
    apps: dict[str, FastAPI]

    def client(self, service: str) -> httpx.AsyncClient:
        return getattr(self, service)


def client_for(app: FastAPI, name: str) -> httpx.AsyncClient:
    # A 500 comes back as a response (and fails the test's status check) instead of raising.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=f"http://{name}.local", timeout=60)


@asynccontextmanager
async def world(
    model: Path,
    store: Path,
    *,
    encoder: dict[str, Any] | None = None,
    classifier: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> AsyncIterator[World]:
    encoder_app = create_encoder(EncoderSettings(model=str(model), threads=1, max_wait_ms=0, **(encoder or {})))
    classifier_app = create_classifier(ClassifierSettings(store=store, torch_threads=1, **(classifier or {})))
    gateway_settings = GatewaySettings(encoder_url=ENCODER_URL, classifier_url=CLASSIFIER_URL, recheck_interval_s=0,
                                       **(gateway or {}))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(encoder_app.router.lifespan_context(encoder_app))
        await stack.enter_async_context(classifier_app.router.lifespan_context(classifier_app))
        await wait_loaded(encoder_app)
        token = gateway_settings.internal_token.get_secret_value() if gateway_settings.internal_token else None
        headers = {"X-Seam-Internal-Token": token} if token else {}
        gateway_app = create_gateway(
            gateway_settings,
            encoder_transport=httpx.ASGITransport(app=encoder_app, raise_app_exceptions=False),
            classifier_transport=httpx.ASGITransport(app=classifier_app, raise_app_exceptions=False),
        )
        await stack.enter_async_context(gateway_app.router.lifespan_context(gateway_app))
        clients = {}
        for name, app in (("encoder", encoder_app), ("classifier", classifier_app), ("gateway", gateway_app)):
            clients[name] = await stack.enter_async_context(client_for(app, name))
            if name != "gateway":
                clients[name].headers.update(headers)
        yield World(**clients, apps={"encoder": encoder_app, "classifier": classifier_app, "gateway": gateway_app})
