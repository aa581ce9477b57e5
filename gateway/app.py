"""The gateway application: ``create_app(settings)`` builds it; nothing happens at import."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway.auth import PUBLIC_PATHS, api_key_credentials
from gateway.routes import router
from gateway.runtime import GatewayRuntime
from gateway.settings import GatewaySettings
from gateway.upstreams import ClassifierClient, EncoderClient, build_wire
from services.admission import install_admission
from services.memory import install_memory_return
from services.metrics import install_metrics
from services.docs import documented_app
from services.requestid import install_request_context
from services.tracing import install_tracing
from services.web import install_problem_handlers


def create_app(
    settings: GatewaySettings | None = None,
    *,
    encoder_transport: httpx.AsyncBaseTransport | None = None,
    classifier_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The transports are for tests: ``httpx.ASGITransport(encoder_app)`` wires a service in-process.
    Without them, the gateway reaches its upstreams over the network with aiohttp."""
    settings = settings or GatewaySettings()
    token = settings.internal_token.get_secret_value() if settings.internal_token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            wires = {}
            for role, url, transport in (
                ("encoder", settings.encoder_url, encoder_transport),
                ("classifier", settings.classifier_url, classifier_transport),
            ):
                # One pooled wire per upstream for the app's lifetime.
                wires[role] = build_wire(url, connect_timeout_s=settings.connect_timeout_s,
                                         max_connections=settings.max_connections, transport=transport)
                stack.push_async_callback(wires[role].aclose)
            limits = {"timeout_s": settings.timeout_s, "token": token}
            encoder = EncoderClient(settings.encoder_url, wires["encoder"], **limits)
            classifier = ClassifierClient(settings.classifier_url, wires["classifier"], **limits)
            app.state.runtime = GatewayRuntime(settings, encoder, classifier)
            await app.state.runtime.warm()
            yield

    app = documented_app(  # /docs from the package's own assets, no CDN
        title="seam gateway",
        version="0.1.0",
        description="Pipelines of an encoder output (or another pipeline's probabilities) feeding a classifier, "
        "every seam checked before a request flows.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    install_admission(app, settings, credentials=api_key_credentials(settings), open_paths=PUBLIC_PATHS)
    install_memory_return(app)
    app.include_router(router)
    install_metrics(app, "gateway")
    install_request_context(app)  # last: outermost (but for tracing's, which wraps the whole app)
    install_tracing(app, "gateway")
    return app
