"""The gateway application: ``create_app(settings)`` builds it; nothing happens at import."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import Counter

from gateway.auth import PUBLIC_PATHS, ApiKeys, api_keys
from gateway.encoders import EncoderRegistry, NamedEncoderClient
from gateway.drift import DriftMonitor, ood_histogram
from gateway.routes import router
from gateway.upgrade_routes import router as upgrade_router
from gateway.runtime import GatewayRuntime
from gateway.settings import GatewaySettings
from gateway.transport import build_wire
from gateway.upstreams import ClassifierClient
from services.http.app import build_app

DESCRIPTION = ("Pipelines of an encoder output (or another pipeline's probabilities) feeding a classifier, "
               "every seam checked before a request flows.")


def create_app(
    settings: GatewaySettings | None = None,
    *,
    encoder_transport: httpx.AsyncBaseTransport | None = None,
    classifier_transport: httpx.AsyncBaseTransport | None = None,
    encoder_transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The transports are for tests: ``httpx.ASGITransport(encoder_app)`` wires a service in-process
    (``encoder_transports`` one per registered encoder name; ``encoder_transport`` serves them all).
    Without them, the gateway reaches its upstreams over the network with aiohttp."""
    settings = settings or GatewaySettings()
    token = settings.internal_token.get_secret_value() if settings.internal_token else None
    keys = api_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            wires = {}
            urls = {("encoder", name): url for name, url in settings.encoder_urls().items()}
            urls[("classifier", "")] = settings.classifier_url
            for (role, name), url in urls.items():
                transport = classifier_transport if role == "classifier" else (encoder_transports or {}).get(
                    name, encoder_transport)
                # One pooled wire per upstream for the app's lifetime.
                wires[role, name] = build_wire(url, connect_timeout_s=settings.connect_timeout_s,
                                               max_connections=settings.max_connections, transport=transport)
                stack.push_async_callback(wires[role, name].aclose)
            limits = {"timeout_s": settings.timeout_s, "token": token}
            encoders = EncoderRegistry(
                {name: NamedEncoderClient(name, url, wires["encoder", name], **limits)
                 for name, url in settings.encoder_urls().items()},
                retry_s=settings.recheck_interval_s,
            )
            classifier = ClassifierClient(settings.classifier_url, wires["classifier", ""], **limits)
            drift = DriftMonitor(settings.drift_window, app.state.ood_histogram)
            app.state.runtime = GatewayRuntime(settings, encoders, classifier, drift=drift, near_ties=app.state.near_ties)
            await app.state.runtime.warm()
            if keys is not None:
                stack.enter_context(_reload_on_sighup(keys))
            yield

    app = build_app("gateway", settings, DESCRIPTION, lifespan, (router, upgrade_router), access=keys,
                    open_paths=PUBLIC_PATHS)
    app.state.api_keys = keys
    if keys is not None:
        keys.counts = Counter("seam_api_key_requests", "Requests by API key id and outcome (allowed, scope, "
                              "pipeline, rate; invalid keys under '<invalid>').", ["key", "outcome"],
                              registry=app.state.metrics.registry)
    app.state.ood_histogram = ood_histogram(app.state.metrics.registry)
    app.state.near_ties = Counter("seam_gateway_near_ties", "Predicted texts decided again from float32 vectors: their "
                                  "two highest probabilities, from an encoder computing in bfloat16, were within "
                                  "GATEWAY_NEAR_TIE_MARGIN.", registry=app.state.metrics.registry)
    return app


class _reload_on_sighup:
    """SIGHUP re-reads the API keys while the app runs (where signals can be handled: the main thread)."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "_reload_on_sighup":
        try:
            self.loop = asyncio.get_running_loop()
            self.loop.add_signal_handler(signal.SIGHUP, self.keys.reload)
        except (NotImplementedError, RuntimeError, ValueError):
            self.loop = None  # not the main thread (an app inside a test): reload() by hand
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.remove_signal_handler(signal.SIGHUP)
