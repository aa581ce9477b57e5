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
from services.http.app import build_app
from services.http.auth import internal_credentials
from services.http.protocols import oip_error, openai_error

log = logging.getLogger("seam.encoder")
DESCRIPTION = "Serves a pre-trained transformer's embeddings, token sequences and probabilities."
# Under these paths, errors also carry the member each protocol's clients read.
PROTOCOL_ERRORS = {"/v2": oip_error, "/v1/embeddings": openai_error, "/v1/models": openai_error}


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

    app = build_app("encoder", settings, DESCRIPTION, lifespan, (router, oip_router, openai_router),
                    credentials=internal_credentials(settings), protocol_errors=PROTOCOL_ERRORS)
    app.state.encoder_metrics = EncoderMetrics(app.state.metrics, app)
    return app
