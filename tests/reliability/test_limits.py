"""Limits are settings with safe defaults; going past one answers 413 or 429 (with Retry-After) at
once, never a hang. Body size, texts per request and characters per text are in the bad-input
table; here: requests in flight on each service, the middlewares themselves, and the defaults."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import FastAPI

from classifier_service.runtime import INLINE_PREDICT_ROWS
from classifier_service.settings import ClassifierSettings
from encoder_service.settings import EncoderSettings
from gateway.settings import GatewaySettings
from services.http.admission import ConcurrencyLimitMiddleware, MediaTypeMiddleware
from services.http.web import install_problem_handlers
from tests.classifier_service.synthetic import features_for, fit_body, tensor_json
from tests.support import world

PROBLEM = "application/problem+json"


def test_every_service_has_safe_default_limits():
    for settings in (EncoderSettings(), ClassifierSettings(), GatewaySettings()):
        assert 0 < settings.max_in_flight <= 1024
        assert 0 < settings.max_body_bytes <= 256 * 1024 * 1024
    encoder, gateway = EncoderSettings(), GatewaySettings()
    assert encoder.max_texts <= 1024 and encoder.max_chars <= 100_000 and encoder.max_queue <= 16_384
    assert gateway.max_texts <= 1024 and gateway.timeout_s <= 60
    assert ClassifierSettings().max_pending_fits <= 64


async def _saturate(client: httpx.AsyncClient, path: str, body: dict, n: int):
    """``n`` requests that hang until ``release``; returns their tasks once all are in."""
    tasks = [asyncio.create_task(client.post(path, json=body)) for _ in range(n)]
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in tasks), [t.result().text for t in tasks if t.done()]
    return tasks


# Per service: which app's runtime method to hold (it runs in a worker thread: the encoder's pass on its
# lead thread; a classifier predict of more rows than run on the event loop), and the request.
_THREADED_ROWS = features_for("embedding", per_class=INLINE_PREDICT_ROWS // 3 + 1)[0]
HOLD = {
    "encoder": ("encoder", "_forward", "/v1/encode", {"texts": ["hello there"]}),
    "classifier": ("classifier", "predict_sync", "/v1/models/m/predict", {"features": tensor_json(_THREADED_ROWS)}),
    "gateway": ("classifier", "versions", "/v1/pipelines/m/predict", {"texts": ["hello there"]}),
}


@pytest.mark.parametrize("service", sorted(HOLD))
async def test_requests_beyond_max_in_flight_get_429_at_once(tiny_bert, tmp_path, service):
    limits = {name: {"max_in_flight": 2 if name == service else 64} for name in ("encoder", "classifier", "gateway")}
    features, labels, contract = features_for("embedding")
    release = threading.Event()
    held_app, method, path, body = HOLD[service]
    async with world(tiny_bert, tmp_path / "models", **limits) as w:
        assert (await w.classifier.post("/v1/models/m/fit", json=fit_body(features, labels, contract))).status_code == 201
        runtime = w.apps[held_app].state.runtime
        work = getattr(runtime, method)
        setattr(runtime, method, lambda *a: (release.wait(10), work(*a))[1])
        client = w.client(service)
        try:
            held = await _saturate(client, path, body, 2)
            started = asyncio.get_running_loop().time()
            refused = await client.post(path, json=body)
            assert asyncio.get_running_loop().time() - started < 1.0  # answered at once, not queued
            assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM, refused.text
            assert refused.headers["retry-after"] == "1"
            assert f"{service.upper()}_MAX_IN_FLIGHT=2" in refused.json()["detail"]
            for probe in ("/healthz", "/readyz"):  # probes are never refused for load
                assert (await client.get(probe)).status_code == 200
        finally:
            release.set()
        statuses = [(await task).status_code for task in held]
        assert statuses == [statuses[0]] * 2 and statuses[0] < 500, statuses
        assert (await client.post(path, json=body)).status_code == statuses[0]  # room again


def _app(**limits) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        await asyncio.sleep(body.get("sleep", 0))
        return body

    app.add_middleware(MediaTypeMiddleware)
    app.add_middleware(ConcurrencyLimitMiddleware, **limits)
    return app


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
        ("application/merge-patch+json", 200),
        (None, 422),  # FastAPI reads a body without Content-Type as bytes: "Input should be a valid dictionary"
        ("text/plain", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/xml", 415),
        ("", 415),
    ],
)
async def test_media_types(content_type, status):
    headers = {} if content_type is None else {"content-type": content_type}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(max_in_flight=4)), base_url="http://t") as client:
        response = await client.post("/echo", content=b'{"a": 1}', headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert response.headers["content-type"] == PROBLEM and "application/json" in response.json()["detail"]


async def test_the_in_flight_count_is_given_back_whatever_happens():
    app = _app(max_in_flight=1, setting="X_MAX_IN_FLIGHT")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t") as c:
        slow = asyncio.create_task(c.post("/echo", json={"sleep": 0.3}))
        await asyncio.sleep(0.1)
        refused = await c.post("/echo", json={})
        assert refused.status_code == 429 and "X_MAX_IN_FLIGHT=1" in refused.json()["detail"]
        assert (await slow).status_code == 200
        assert (await c.post("/echo", content=b"{bad", headers={"content-type": "application/json"})).status_code == 400  # an error gives its slot back too
        assert (await c.post("/echo", json={"ok": 1})).status_code == 200
