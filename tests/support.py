"""What test modules share: the problem check, the sample data, and apps run in process.

Test modules import helpers from here (or from the fakes and harnesses beside it: tests/gateway/fakes.py,
tests/processes.py), never from another test module or a conftest; fixtures live in the conftest.py of
the folder that uses them.

- ``assert_problem(response, status, *needles)``: an RFC 9457 problem with that status, each needle in
  its detail; returns the body.
- ``sample(n)``: the project's sample data (seam/data/support_intents.csv), all of it or its first ``n``
  rows with every label kept; ``TEXTS``/``LABELS``: twelve short ones; ``train(client, name, ...)``: a
  pipeline trained through a gateway on ``sample(48)``.
- ``serve(app)``: an app's lifespan run and an in-process client for it.
- ``gateway_app(settings, encoder=..., classifier=...)``: the one way to build a gateway over fakes or
  other transports; ``encoder_client(**settings)``: an encoder app, its model loaded, and a client.
- ``mapping_rss``, ``needs_pageout``: memory measured per mapping (services.http.memory, the encoder's
  prepacked weights); ``dashboard_metrics()``: the metric families deploy/grafana's dashboard queries;
  ``keys_toml(...)``: a gateway's scoped keys file.
- ``Services``: the real encoder and classifier apps in process, each behind an address whose app can
  be replaced (an encoder restart with another model); ``world(...)``: those two and a gateway, with a
  client for each.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "seam" / "data" / "support_intents.csv"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "seam.json"
PROBLEM = "application/problem+json"
# Twelve short texts, three intents: enough to train a pipeline on the real services.
TEXTS = ["where is my parcel", "my parcel is late", "the package was lost", "delivery arrived late",
         "i was charged twice", "refund my payment", "the invoice is wrong", "cancel my subscription",
         "reset my password", "login to my account", "change my email address", "my account password"]
LABELS = ["shipping"] * 4 + ["billing"] * 4 + ["account"] * 4
ENCODER_URL = "http://encoder.local"
CLASSIFIER_URL = "http://classifier.local"


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    return body


def sample(n: int | None = None) -> tuple[list[str], list[str]]:
    """The sample data's texts and labels: every row, or the first ``n`` rows with every label kept."""
    with SAMPLE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if n is not None:
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            by_label.setdefault(row["label"], []).append(row)
        rows = [row for i in range(n) for group in by_label.values() if i < len(group) for row in [group[i]]][:n]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def mapping_rss(address: int) -> int:
    """Resident bytes of the mapping that holds ``address`` (from /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise LookupError(f"no mapping holds {address:#x}")


def kernel_pages_out() -> bool:
    if sys.platform != "linux":
        return False
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return (major, minor) >= (5, 4)


needs_pageout = pytest.mark.skipif(not kernel_pages_out(), reason="MADV_PAGEOUT needs Linux 5.4 or later")

_METRIC = re.compile(r"\bseam_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def dashboard_metrics() -> set[str]:
    """The metric families the dashboard's queries name (``seam_x_total`` and ``seam_x_bucket`` are ``seam_x``)."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    names = {m for e in exprs for m in _METRIC.findall(e)}
    return {next((n.removesuffix(s) for s in _SUFFIXES if n.endswith(s)), n) for n in names}


def keys_toml(**keys: dict[str, Any]) -> str:
    """A GATEWAY_API_KEYS_FILE: one ``[[keys]]`` table per key id, with the fields given."""
    tables = (f"[[keys]]\nid = {json.dumps(key_id)}\n" + "".join(f"{field} = {json.dumps(value)}\n" for field, value in fields.items())
              for key_id, fields in keys.items())
    return "\n".join(tables)


async def train(client: httpx.AsyncClient, name: str, feature: str = "embedding", estimator: str | None = None,
                **extra: Any) -> dict:
    """Train ``name`` through a gateway on ``sample(48)``: 201, its version record."""
    texts, labels = sample(48)
    body = {"texts": texts, "labels": labels, "feature": feature, "estimator": estimator, **extra}
    response = await client.post(f"/v1/pipelines/{name}/train", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@asynccontextmanager
async def serve(app: Any, base_url: str = "http://test", *, raise_app_exceptions: bool = True
                ) -> AsyncIterator[httpx.AsyncClient]:
    """``app``'s lifespan run, and a client talking to it in process (``client.app`` is the app).
    ``raise_app_exceptions=False`` lets a test see the 500 problem an unexpected error becomes."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


def transport(upstream: Any) -> httpx.AsyncBaseTransport:
    """A fake's transport (tests/gateway/fakes.py), or the transport given."""
    return upstream.transport() if hasattr(upstream, "transport") else upstream


def gateway_app(settings: Any, *, encoder: Any = None, classifier: Any = None, encoders: dict[str, Any] | None = None):
    """The gateway over ``encoder`` and ``classifier`` (fakes or transports; ``encoders`` by name for several),
    its lifespan not yet run."""
    from gateway.app import create_app

    return create_app(
        settings,
        encoder_transport=None if encoder is None else transport(encoder),
        classifier_transport=None if classifier is None else transport(classifier),
        encoder_transports=None if encoders is None else {name: transport(e) for name, e in encoders.items()},
    )


@asynccontextmanager
async def encoder_client(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process encoder app (lifespan run, model loaded) and a client for it."""
    from encoder_service.app import create_app
    from encoder_service.settings import EncoderSettings

    app = create_app(EncoderSettings(**settings))
    async with serve(app, "http://encoder") as client:
        await app.state.loading
        yield client


async def wait_loaded(encoder: Any) -> None:
    for _ in range(1200):
        if encoder.state.runtime.ready or encoder.state.load_error:
            break
        await asyncio.sleep(0.05)
    assert encoder.state.runtime.ready, encoder.state.load_error


class SwappableTransport(httpx.AsyncBaseTransport):
    """An upstream address whose app can be replaced: a restart with another model, in process."""

    def __init__(self) -> None:
        self.target: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.target is None:
            raise httpx.ConnectError("nothing listens here", request=request)
        return await self.target.handle_async_request(request)


class Services:
    """The real encoder (a tiny model) and classifier apps, their lifespans run, behind ``encoder`` and
    ``classifier`` (transports for a gateway); ``stack`` closes them. ``raise_app_exceptions=False``: an
    unexpected error in an app reaches its caller as the 500 it becomes."""

    def __init__(self, stack: AsyncExitStack, store: Path, *, raise_app_exceptions: bool = True) -> None:
        self.stack, self.store, self.raise_app_exceptions = stack, store, raise_app_exceptions
        self.encoder, self.classifier = SwappableTransport(), SwappableTransport()
        self.apps: dict[str, Any] = {}
        self.encoder_model: Path | None = None
        self._encoder_scope: AsyncExitStack | None = None
        stack.push_async_callback(self.stop_encoder)

    def _transport(self, app: Any) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=app, raise_app_exceptions=self.raise_app_exceptions)

    async def serve_encoder(self, model: Path, **settings: Any) -> None:
        from encoder_service.app import create_app
        from encoder_service.settings import EncoderSettings

        await self.stop_encoder()
        scope = AsyncExitStack()
        app = create_app(EncoderSettings(model=str(model), threads=1, max_wait_ms=0, **settings))
        await scope.enter_async_context(app.router.lifespan_context(app))
        await wait_loaded(app)
        self._encoder_scope, self.encoder_model, self.apps["encoder"] = scope, model, app
        self.encoder.target = self._transport(app)

    async def stop_encoder(self) -> None:
        self.encoder.target = None
        if self._encoder_scope is not None:
            await self._encoder_scope.aclose()
            self._encoder_scope = None

    async def start_classifier(self, **settings: Any) -> None:
        from classifier_service.app import create_app
        from classifier_service.settings import ClassifierSettings

        app = create_app(ClassifierSettings(store=self.store, torch_threads=1, **settings))
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.apps["classifier"] = app
        self.classifier.target = self._transport(app)


def in_process_settings(**settings: Any):
    """Gateway settings for upstreams at ENCODER_URL and CLASSIFIER_URL (``Services``), refusals never cached."""
    from gateway.settings import GatewaySettings

    return GatewaySettings(encoder_url=ENCODER_URL, classifier_url=CLASSIFIER_URL, recheck_interval_s=0, **settings)


@dataclass
class World:
    encoder: httpx.AsyncClient
    classifier: httpx.AsyncClient
    gateway: httpx.AsyncClient
    apps: dict[str, Any]

    def client(self, service: str) -> httpx.AsyncClient:
        return getattr(self, service)


@asynccontextmanager
async def world(model: Path, store: Path, *, encoder: dict[str, Any] | None = None,
                classifier: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None) -> AsyncIterator[World]:
    """The three apps in process, each with its settings changed as given, and a client for each (a 500
    comes back as a response; the encoder's and classifier's send the gateway's internal token)."""
    async with AsyncExitStack() as stack:
        services = Services(stack, store, raise_app_exceptions=False)
        await services.serve_encoder(model, **(encoder or {}))
        await services.start_classifier(**(classifier or {}))
        settings = in_process_settings(**(gateway or {}))
        services.apps["gateway"] = app = gateway_app(settings, encoder=services.encoder, classifier=services.classifier)
        await stack.enter_async_context(app.router.lifespan_context(app))
        token = settings.internal_token
        clients = {}
        for name in ("encoder", "classifier", "gateway"):
            transport = httpx.ASGITransport(app=services.apps[name], raise_app_exceptions=False)
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url=f"http://{name}.local", timeout=60))
            if token and name != "gateway":
                clients[name].headers["X-Seam-Internal-Token"] = token.get_secret_value()
        yield World(**clients, apps=dict(services.apps))
