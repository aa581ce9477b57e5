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
from services.admission import install_admission
from services.memory import install_memory_return
from services.auth import internal_credentials
from services.metrics import install_metrics
from services.protocols import ProtocolErrorMiddleware, oip_error
from services.docs import documented_app
from services.requestid import install_request_context
from services.tracing import install_tracing
from services.web import install_problem_handlers


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

    app = documented_app(  # /docs from the package's own assets, no CDN
        title="seam classifier",
        version="0.1.0",
        description="Named, versioned downstream models fitted on an encoder's output: fit, predict, persist.",
        lifespan=lifespan,
        redirect_slashes=False,  # a trailing slash is a 404, never a redirect to the Host the caller named
    )
    app.state.settings = settings
    app.state.runtime = None
    install_problem_handlers(app)
    install_admission(app, settings, credentials=internal_credentials(settings))
    install_memory_return(app)
    app.include_router(router)
    app.include_router(alias_router)
    app.include_router(oip_router)
    app.add_middleware(ProtocolErrorMiddleware, members={"/v2": oip_error})
    install_metrics(app, "classifier")
    install_request_context(app)  # last: outermost (but for tracing's, which wraps the whole app)
    install_tracing(app, "classifier")
    return app
