"""The encoder service application: ``create_app(settings)`` builds it; nothing happens at import."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from encoder_service.batching import Batcher
from encoder_service.metrics import EncoderMetrics
from encoder_service.oip_routes import router as oip_router
from encoder_service.openai_routes import router as openai_router
from encoder_service.routes import router
from encoder_service.runtime import EncoderRuntime
from encoder_service.settings import EncoderSettings
from services.metrics import install_metrics
from services.protocols import ProtocolErrorMiddleware, oip_error, openai_error
from services.admission import install_admission
from services.memory import install_memory_return
from services.auth import internal_credentials
from services.docs import documented_app
from services.requestid import install_request_context
from services.tracing import install_tracing
from services.web import install_problem_handlers

log = logging.getLogger("seam.encoder")


async def _load(app: FastAPI) -> None:
    try:
        await anyio.to_thread.run_sync(app.state.runtime.load)
    except Exception as exc:  # reported by /readyz and the log; the process stays up for probes
        app.state.load_error = str(exc)
        log.exception("model failed to load")


def create_app(settings: EncoderSettings | None = None) -> FastAPI:
    settings = settings or EncoderSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = EncoderRuntime(settings)
        app.state.load_error = None
        app.state.batcher = Batcher(app.state.runtime, settings)
        app.state.batcher.on_batch = app.state.encoder_metrics.observe_batch
        app.state.batcher.start()
        # Load in the background: /healthz answers at once, /readyz turns 200 when the model is warm.
        app.state.loading = asyncio.create_task(_load(app))
        try:
            yield
        finally:
            app.state.loading.cancel()
            await app.state.batcher.stop()
            await anyio.to_thread.run_sync(app.state.runtime.close)

    app = documented_app(  # /docs from the package's own assets, no CDN
        title="seam encoder",
        version="0.1.0",
        description="Serves a pre-trained transformer's embeddings, token sequences and probabilities.",
        lifespan=lifespan,
        redirect_slashes=False,  # a trailing slash is a 404, never a redirect to the Host the caller named
    )
    app.state.settings = settings
    install_problem_handlers(app)
    install_admission(app, settings, credentials=internal_credentials(settings))
    install_memory_return(app)
    app.include_router(router)
    app.include_router(oip_router)
    app.include_router(openai_router)
    app.add_middleware(ProtocolErrorMiddleware, members={"/v2": oip_error, "/v1/embeddings": openai_error, "/v1/models": openai_error})
    app.state.encoder_metrics = EncoderMetrics(install_metrics(app, "encoder"), app)
    install_request_context(app)  # last: outermost (but for tracing's, which wraps the whole app)
    install_tracing(app, "encoder")
    return app
