"""How each service's app is built and served: :func:`build_app` installs every piece of the kit in the
one order that works, and :func:`serve` is the three ``__main__`` modules' entry point.

The order, innermost first (``add_middleware`` wraps what is there): the problem handlers; admission
(in flight, the body, its media type, credentials: :mod:`services.http.admission`); memory return;
the routes; the protocols' error members; metrics (they wrap the problem handler, to count refusals);
request ids and the access log, around all of it; tracing's server span, around everything.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI

from services import tracing
from services.http.admission import install_admission
from services.http.auth import OPEN_PATHS, Credentials, KeyAccess
from services.http.docs import documented_app
from services.http.memory import freeze_heap, install_memory_return
from services.http.metrics import install_metrics
from services.http.protocols import ErrorMember, ProtocolErrorMiddleware
from services.http.requestid import install_request_context
from services.http.web import install_problem_handlers
from services.settings import ServiceSettings


def build_app(
    service: str,
    settings: ServiceSettings,
    description: str,
    lifespan: Callable[[FastAPI], Any],
    routers: Iterable[APIRouter],
    *,
    credentials: Credentials | None = None,
    access: KeyAccess | None = None,
    open_paths: Iterable[str] = OPEN_PATHS,
    protocol_errors: dict[str, ErrorMember] | None = None,
) -> FastAPI:
    """The app of ``service`` (``encoder``, ...): ``settings`` on ``app.state``, metrics on
    ``app.state.metrics``; ``credentials`` or ``access`` guard it (see :func:`install_admission`);
    ``protocol_errors`` adds a protocol's error member under path prefixes (``{"/v2": oip_error}``)."""
    app = documented_app(  # /docs from the package's own assets, no CDN
        title=f"seam {service}",
        version="0.1.0",
        description=description,
        lifespan=lifespan,
        redirect_slashes=False,  # a trailing slash is a 404, never a redirect to the Host the caller named
    )
    app.state.settings = settings
    install_problem_handlers(app)
    install_admission(app, settings, credentials=credentials, access=access, open_paths=open_paths)
    install_memory_return(app)
    for router in routers:
        app.include_router(router)
    if protocol_errors:
        app.add_middleware(ProtocolErrorMiddleware, members=protocol_errors)
    install_metrics(app, service)
    install_request_context(app)  # outermost of ours
    provider = tracing.start(service)
    if provider is not None:  # tracing on: the FastAPI instrumentation's span wraps the whole app
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=tracing.UNTRACED_URLS,
                                           exclude_spans=["receive", "send"])
    return app


def serve(service: str, settings: ServiceSettings, factory: str, environ: dict[str, str] | None = None) -> None:
    """Logs as ``settings`` say, sets ``environ`` (where the operator has not), then imports ``factory``
    (``module:function``, imported only now: the model libraries read that environment once), builds
    the app with ``settings`` and serves it with uvicorn until stopped."""
    from services.http.logs import configure_logging

    # seam's own lines and uvicorn's, one handler.
    logging_options = configure_logging(service, level=settings.log_level, fmt=settings.log_format)
    for name, value in (environ or {}).items():
        os.environ.setdefault(name, value)  # what the operator set wins
    import uvicorn

    module, _, function = factory.partition(":")
    app = getattr(importlib.import_module(module), function)(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, **logging_options)
