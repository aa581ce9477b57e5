"""The classifier service application: ``create_app(settings)`` builds it; nothing happens at import."""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from classifier_service.alias_routes import router as alias_router
from classifier_service.oip_routes import router as oip_router
from classifier_service.routes import router
from classifier_service.runtime import ClassifierRuntime
from classifier_service.settings import ClassifierSettings
from services.http.app import build_app
from services.http.auth import internal_credentials
from services.http.protocols import oip_error


DESCRIPTION = "Named, versioned downstream models fitted on an encoder's output: fit, predict, persist."


def create_app(settings: ClassifierSettings | None = None) -> FastAPI:
    settings = settings or ClassifierSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = ClassifierRuntime(settings)
        app.state.runtime = runtime
        # The store loads before the first request is accepted: /readyz is 200 from then on.
        await anyio.to_thread.run_sync(runtime.load)
        try:
            yield
        finally:
            runtime.close()

    app = build_app("classifier", settings, DESCRIPTION, lifespan, (router, alias_router, oip_router),
                    credentials=internal_credentials(settings), protocol_errors={"/v2": oip_error})
    app.state.runtime = None
    return app
