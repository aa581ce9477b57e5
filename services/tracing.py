"""OpenTelemetry tracing for the three services: off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, then OTLP over HTTP with protobuf.

Off, nothing of OpenTelemetry's SDK is imported and each instrumentation point costs an attribute
test: :data:`tracer` is None and :func:`span` hands back one shared do-nothing context manager.

On, every other ``OTEL_*`` variable is the SDK's to read (headers, timeout, sampler, batch processor,
resource attributes, propagators); ``OTEL_SERVICE_NAME`` overrides each service's default name
(``seam-gateway``, ``seam-encoder``, ``seam-classifier``). Each app's server spans come from the
FastAPI instrumentation, which continues an incoming W3C ``traceparent``; the gateway makes a client
span per upstream call and sends its context on (gateway.upstreams); the gateway's compatibility
decision, the encoder's queue wait and forward pass, and the classifier's predict and fit are spans of
their own. One provider per process (the first app installed names it), flushed at exit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Probes are not traced: a scrape every few seconds would bury the requests.
UNTRACED_URLS = "/healthz,/readyz,/metrics,/v2/health/live,/v2/health/ready"

tracer: Any = None  # an opentelemetry Tracer while tracing is on; None: off
_provider: Any = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (an OTLP endpoint, and the SDK not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


class _NoSpan:
    """What :func:`span` gives while tracing is off: does nothing, costs nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        return None


NO_SPAN = _NoSpan()


def span(name: str, *, attributes: Mapping[str, Any] | None = None, kind: str = "internal", links: Any = None) -> Any:
    """A child span of the current one, as a context manager (``with span("x") as s: s.set_attribute(...)``)."""
    if tracer is None:
        return NO_SPAN
    from opentelemetry.trace import SpanKind

    return tracer.start_as_current_span(name, kind=SpanKind[kind.upper()], attributes=attributes, links=links)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds the current trace context (``traceparent``, ...) to outgoing ``headers``."""
    if tracer is not None:
        from opentelemetry.propagate import inject as _inject

        _inject(headers)
    return headers


def current_context() -> Any:
    """The current span's context (to link to, or to parent a span started elsewhere); None when off."""
    if tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """The current (trace id, span id) in hex, for log lines; None when off or outside a span."""
    if tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def start(service: str) -> Any:
    """The process's tracer provider when the environment asks for traces (see the module's docstring),
    made by the first caller (it names the service); None when tracing is off."""
    global tracer, _provider
    if not wanted():
        return None
    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        # Resource.create lets the attributes given here win over the environment's: give none when it names the service.
        resource = Resource.create({} if named else {"service.name": f"seam-{service}"})
        _provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER; flushed at exit
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_*, OTEL_BSP_*
        tracer = _provider.get_tracer("seam")
    return _provider
