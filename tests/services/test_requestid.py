"""Request ids, the access log, JSON log lines and tracing's off switch, in-process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI

from services import tracing
from services.http import logs
from services.errors import IncompatiblePipeline
from services.http.requestid import REQUEST_ID_HEADER, accepted, install_request_context
from services.http.web import install_problem_handlers
from tests.processes import ROOT


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    @app.get("/refused")
    async def refused() -> dict:
        raise IncompatiblePipeline("does not fit", mismatches=[])

    @app.get("/broken")
    async def broken() -> dict:
        raise RuntimeError("bug")

    install_request_context(app)
    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize("given, kept", [
    (b"abc-123", True), (b"a" * 128, True), (b"a" * 129, False), (b"", False), (b"has space", False),
    (b"tab\there", False), ("é".encode(), False), (b"trace:4bf92f35/x+y=z@host.name_1", True),
])
def test_which_ids_are_kept(given, kept):
    assert (accepted(given) == given.decode()) is kept


async def test_an_id_is_returned_on_success_refusal_and_crash(client):
    ok = await client.get("/ok", headers={REQUEST_ID_HEADER: "mine"})
    assert ok.headers[REQUEST_ID_HEADER] == "mine"
    made = await client.get("/ok")
    assert len(made.headers[REQUEST_ID_HEADER]) == 32 and made.headers.get_list(REQUEST_ID_HEADER) == [made.headers[REQUEST_ID_HEADER]]
    refused = await client.get("/refused", headers={REQUEST_ID_HEADER: "r-1"})
    assert refused.status_code == 409 and refused.json()["request_id"] == "r-1"
    assert refused.headers.get_list(REQUEST_ID_HEADER) == ["r-1"]
    crashed = await client.get("/broken", headers={REQUEST_ID_HEADER: "c-1"})
    assert crashed.status_code == 500 and crashed.json()["request_id"] == "c-1" and crashed.headers[REQUEST_ID_HEADER] == "c-1"
    missing = await client.get("/nowhere", headers={REQUEST_ID_HEADER: "n-1"})
    assert missing.status_code == 404 and missing.json()["request_id"] == "n-1"


async def test_the_access_log_names_the_request(client, caplog):
    caplog.set_level(logging.INFO, logger="seam.requests")
    await client.get("/refused", headers={REQUEST_ID_HEADER: "logged-1"})
    await client.get("/healthz")  # probes are not logged
    [record] = [r for r in caplog.records if r.name == "seam.requests"]
    assert (record.method, record.path, record.route, record.status) == ("GET", "/refused", "/refused", 409)
    assert record.duration_ms >= 0


def test_json_lines_carry_the_common_fields_and_the_events_own():
    record = logging.LogRecord("seam.requests", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.route, record.status = "/x", 200
    logs.ContextFilter("gateway").filter(record)
    line = json.loads(logs.JSONFormatter().format(record))
    assert line["message"] == "GET /x" and line["service"] == "gateway" and line["level"] == "info"
    assert line["route"] == "/x" and line["status"] == 200 and line["request_id"] == "-"
    assert line["time"].endswith("Z") and "trace_id" not in line


@pytest.mark.parametrize("env, wanted", [
    ({}, False), ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
])
def test_tracing_is_on_only_when_an_endpoint_is_set(env, wanted):
    assert tracing.wanted(env) is wanted


def test_tracing_off_imports_nothing_of_the_sdk():
    """Off, the apps never import OpenTelemetry's SDK, exporter or instrumentation: nothing runs per request."""
    code = ("import sys; from gateway.app import create_app; create_app(); from services import tracing; "
            "print(tracing.tracer, sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
            "'opentelemetry.instrumentation', 'opentelemetry.exporter'))))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None []"
    assert tracing.span("x") is tracing.NO_SPAN and tracing.inject({}) == {}
