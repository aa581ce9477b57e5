"""services.http.metrics on a small app built here: request counts and latency by route template and status,
refusals by field, upstream errors by stage, scraped from /metrics and parsed by prometheus_client."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from services.errors import IncompatiblePipeline, UpstreamTimeout
from services.http.metrics import UNMATCHED, install_metrics, stage_label
from services.http.web import install_problem_handlers


def build_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/items/{name}")
    async def item(name: str) -> dict[str, str]:
        return {"name": name}

    @app.post("/refuse")
    async def refuse() -> None:
        raise IncompatiblePipeline(
            "no", mismatches=[{"field": "dim", "expected": 384, "actual": 768}, {"field": "space.model_id"}]
        )

    @app.post("/slow-upstream")
    async def slow() -> None:
        raise UpstreamTimeout("late", upstream="encoder http://e:8001", stage="predict intents v3")

    install_metrics(app, "test")
    return app


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
async def client():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        yield client


async def test_requests_by_route_template_and_status(client):
    for name in ("a", "b", "c"):
        assert (await client.get(f"/items/{name}")).status_code == 200
    assert (await client.get("/nowhere")).status_code == 404
    r = await client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    samples = scrape(r.text)
    labels = (("method", "GET"), ("route", "/items/{name}"), ("status", "200"))
    assert samples[("seam_http_requests_total", labels)] == 3
    assert samples[("seam_http_request_duration_seconds_count", labels)] == 3
    assert samples[("seam_http_request_duration_seconds_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] == 3
    assert samples[("seam_http_requests_total", (("method", "GET"), ("route", UNMATCHED), ("status", "404")))] == 1
    assert samples[("seam_service_info", (("service", "test"), ("version", "0.1.0")))] == 1


async def test_refusals_by_field_and_upstream_errors_by_stage(client):
    assert (await client.post("/refuse")).status_code == 409
    assert (await client.post("/refuse")).status_code == 409
    assert (await client.post("/slow-upstream")).status_code == 504
    samples = scrape((await client.get("/metrics")).text)
    refusal = "seam_compatibility_refusals_total"
    assert samples[(refusal, (("error", "incompatible-pipeline"), ("field", "dim")))] == 2
    assert samples[(refusal, (("error", "incompatible-pipeline"), ("field", "space.model_id")))] == 2
    upstream = (("error", "upstream-timeout"), ("stage", "predict"), ("upstream", "encoder"))
    assert samples[("seam_upstream_errors_total", upstream)] == 1
    assert samples[("seam_http_requests_total", (("method", "POST"), ("route", "/refuse"), ("status", "409")))] == 2


async def test_each_app_counts_alone():
    first, second = build_app(), build_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t") as one:
        await one.get("/items/x")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://t") as two:
        samples = scrape((await two.get("/metrics")).text)
    assert ("seam_http_requests_total", (("method", "GET"), ("route", "/items/{name}"), ("status", "200"))) not in samples


@pytest.mark.parametrize(
    ("stage", "label"),
    [("encode tokens", "encode tokens"), ("predict intents v3", "predict"), ("read model intents v2", "read model"),
     ("fit intents", "fit"), ("list models", "list models"), ("readiness", "readiness"), ("", "unknown")],
)
def test_stage_labels_drop_names_and_versions(stage, label):
    assert stage_label(stage) == label
