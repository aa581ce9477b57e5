"""Prometheus metrics for the three services, on ``GET /metrics``.

Each app gets its own ``CollectorRegistry`` (never the process-global one), so several apps in one
process (the tests, an in-process gateway) keep separate counts. :func:`install_metrics` adds:

- ``seam_http_requests_total`` and ``seam_http_request_duration_seconds`` by method, route template
  (``/v1/pipelines/{name}/predict``, never the raw path) and status;
- ``seam_http_requests_in_flight``;
- ``seam_compatibility_refusals_total`` by field (``dim``, ``space.fingerprint``, ``labels``, ...): every
  mismatch of a refused pipeline (gateway, 409) or of refused features (classifier, 422);
- ``seam_upstream_errors_total`` by upstream, stage (``encode embedding``, ``predict``, ``fit``, ...)
  and error (``upstream-timeout``, ...), counted where an upstream failure reaches a client.

A service adds its own instruments to ``app.state.metrics.registry`` (the encoder: batch sizes, queue
depth, tokens processed).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.errors import SeamError
from services.http.asgi import HTTPMiddleware, RecordingSend

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
UNMATCHED = "<unmatched>"


class ServiceMetrics:
    """The instruments every service has, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "seam_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "seam_http_request_duration_seconds", "Time to answer an HTTP request, by route template and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("seam_http_requests_in_flight", "HTTP requests being answered.", registry=self.registry)
        self.refusals = Counter(
            "seam_compatibility_refusals", "Mismatches in refused requests, by contract field.",
            ["field", "error"], registry=self.registry,
        )
        self.upstream_errors = Counter(
            "seam_upstream_errors", "Upstream failures that reached a client, by upstream, stage and error.",
            ["upstream", "stage", "error"], registry=self.registry,
        )
        Gauge("seam_service_info", "Which seam service this is.", ["service", "version"], registry=self.registry).labels(
            service=service, version="0.1.0"
        ).set(1)

    def observe_error(self, exc: SeamError) -> None:
        """Counts what a refusal says: its mismatches by field, its upstream failure by stage."""
        for mismatch in exc.extra.get("mismatches") or ():
            field = mismatch.get("field") if isinstance(mismatch, dict) else getattr(mismatch, "field", None)
            self.refusals.labels(field=str(field or "unknown"), error=exc.slug).inc()
        stage, upstream = exc.extra.get("stage"), exc.extra.get("upstream")
        if isinstance(stage, str) and isinstance(upstream, str):
            self.upstream_errors.labels(upstream=upstream.split()[0], stage=stage_label(stage), error=exc.slug).inc()

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def stage_label(stage: str) -> str:
    """A bounded label from a stage description: model names and versions dropped
    (``predict intents v3`` -> ``predict``; ``encode tokens`` and ``read model`` kept)."""
    words = stage.split()
    if not words:
        return "unknown"
    if words[0] == "encode" or words[:2] in (["read", "model"], ["list", "models"]):
        return " ".join(words[:2])
    return words[0]


class MetricsMiddleware(HTTPMiddleware):
    """Counts and times every HTTP request by the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        sent = RecordingSend(send)
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sent)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            labels = {"method": scope.get("method", ""), "route": getattr(route, "path", None) or UNMATCHED,
                      "status": str(sent.status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, service: str) -> ServiceMetrics:
    """Metrics on ``app``: the middleware, refusal counting and ``GET /metrics``. Call it after the
    problem handlers are installed: it wraps the one that renders every :class:`SeamError`."""
    metrics = ServiceMetrics(service)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    render_problem = app.exception_handlers.get(SeamError)
    if render_problem is not None:

        async def counted(request: Request, exc: Any) -> Response:
            metrics.observe_error(exc)
            return await render_problem(request, exc)

        app.exception_handlers[SeamError] = counted

    async def scrape() -> Response:
        """Prometheus metrics of this service (text exposition format)."""
        return metrics.render()

    app.add_api_route("/metrics", scrape, methods=["GET"], tags=["monitoring"], response_class=Response)
    return metrics
