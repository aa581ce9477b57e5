"""The gateway application: ``create_app(settings)`` builds it; nothing happens at import."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway.auth import PUBLIC_PATHS, api_key_credentials
from gateway.encoders import EncoderRegistry, NamedEncoderClient
from gateway.routes import router
from gateway.upgrade_routes import router as upgrade_router
from gateway.runtime import GatewayRuntime
from gateway.settings import GatewaySettings
from gateway.upstreams import ClassifierClient, build_wire
from services.admission import install_admission
from services.memory import install_memory_return
from services.metrics import install_metrics
from services.web import install_problem_handlers


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
            app.state.runtime = GatewayRuntime(settings, encoders, classifier)
            await app.state.runtime.warm()
            yield

    app = FastAPI(
        title="seam gateway",
        version="0.1.0",
        description="Pipelines of an encoder output (or another pipeline's probabilities) feeding a classifier, "
        "every seam checked before a request flows.",
        lifespan=lifespan,
        redirect_slashes=False,  # a trailing slash is a 404, never a redirect to the Host the caller named
    )
    app.state.settings = settings
    install_problem_handlers(app)
    install_admission(app, settings, credentials=api_key_credentials(settings), open_paths=PUBLIC_PATHS)
    install_memory_return(app)
    app.include_router(router)
    app.include_router(upgrade_router)
    install_metrics(app, "gateway")
    return app
