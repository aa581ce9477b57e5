"""seam.client against answers made up here (httpx.MockTransport): the error class each problem type
raises, the bounded Retry-After retries, the headers sent. The live stack: tests/integration/test_observability.py."""

from __future__ import annotations

import json

import httpx
import pytest

from seam import client as sc

PROBLEM = "application/problem+json"


def problem(status: int, slug: str, **extra) -> httpx.Response:
    body = {"type": sc.PROBLEM_BASE + slug, "title": slug, "status": status, "detail": f"{slug} happened", **extra}
    headers = {"content-type": PROBLEM, "X-Request-ID": "rid-1"}
    if status in (429, 503):
        headers["Retry-After"] = "0"
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize("status, slug, cls", [
    (400, "malformed-request", sc.BadRequest), (401, "unauthorized", sc.Unauthorized), (403, "forbidden", sc.Forbidden),
    (404, "pipeline-not-found", sc.PipelineNotFound), (404, "model-not-found", sc.NotFound),
    (409, "incompatible-pipeline", sc.IncompatiblePipeline), (409, "conflict", sc.Conflict),
    (413, "payload-too-large", sc.PayloadTooLarge), (415, "unsupported-media-type", sc.UnsupportedMediaType),
    (422, "invalid-input", sc.InvalidInput), (422, "feature-mismatch", sc.InvalidInput),
    (429, "overloaded", sc.Overloaded), (500, "internal", sc.ServerError),
    (502, "bad-upstream-response", sc.BadUpstreamResponse), (503, "upstream-unavailable", sc.Unavailable),
    (503, "not-ready", sc.Unavailable), (504, "upstream-timeout", sc.UpstreamTimeout),
])
def test_each_problem_raises_its_class(status, slug, cls):
    transport = httpx.MockTransport(lambda request: problem(status, slug))
    with sc.Gateway("http://seam.test", transport=transport, retries=0) as seam, pytest.raises(cls) as raised:
        seam.predict("p", ["x"])
    error = raised.value
    assert type(error) is cls and error.status == status and error.detail == f"{slug} happened"
    assert error.request_id == "rid-1" and str(error) == f"{status} {slug}: {slug} happened"


def test_an_incompatible_pipeline_carries_its_mismatches():
    mismatch = {"field": "dim", "expected": 768, "actual": 384, "message": "width", "producer": "enc", "consumer": "clf"}
    transport = httpx.MockTransport(lambda request: problem(409, "incompatible-pipeline", mismatches=[mismatch]))
    with sc.Gateway("http://seam.test", transport=transport) as seam, pytest.raises(sc.IncompatiblePipeline) as raised:
        seam.predict("p", ["x"])
    assert raised.value.mismatches == [sc.Mismatch("dim", 768, 384, "width", "enc", "clf")]


@pytest.mark.parametrize("status, slug", [(429, "overloaded"), (503, "not-ready")])
def test_retry_after_is_honoured_a_bounded_number_of_times(status, slug):
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            return problem(status, slug)
        return httpx.Response(200, json={"name": "p", "version": 1, "predictions": [
            {"label": "a", "probabilities": {"a": 0.9, "b": 0.1}, "truncated": False}]})

    with sc.Gateway("http://seam.test", transport=httpx.MockTransport(answer), retries=2) as seam:
        assert seam.predict("p", ["x"]).labels == ["a"]
    assert len(calls) == 3
    calls.clear()
    with sc.Gateway("http://seam.test", transport=httpx.MockTransport(answer), retries=1) as seam:
        with pytest.raises(sc.SeamError) as raised:
            seam.predict("p", ["x"])
    assert raised.value.status == status and len(calls) == 2


def test_no_retry_without_retry_after():
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"type": sc.PROBLEM_BASE + "upstream-unavailable", "status": 503})

    with sc.Gateway("http://seam.test", transport=httpx.MockTransport(answer)) as seam, pytest.raises(sc.Unavailable):
        seam.pipelines()
    assert len(calls) == 1


def test_api_key_and_version_are_sent():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": "p", "version": 2, "predictions": []})

    with sc.Gateway("http://seam.test/", api_key="k", transport=httpx.MockTransport(answer)) as seam:
        assert seam.predict("p", ["x"], version=2).version == 2
    assert seen[0].headers["authorization"] == "Bearer k" and seen[0].url.params["version"] == "2"
    assert json.loads(seen[0].content) == {"texts": ["x"]}


async def test_the_async_client_streams_a_file_and_retries_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(25)))
    bodies = []

    async def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(await request.aread()))
        if len(bodies) == 1:
            return problem(429, "overloaded")
        return httpx.Response(201, json={"name": "t", "version": 1, "estimator": "lr", "feature": "embedding",
                                         "classes": ["a", "b"], "metrics": {}, "truncated_texts": 0})

    async with sc.AsyncGateway("http://seam.test", transport=httpx.MockTransport(answer)) as seam:
        result = await seam.train_file("t", path, chunk_rows=4, estimator="lr")
    assert result.classes == ["a", "b"] and len(bodies) == 2
    assert bodies[0] == bodies[1] and len(bodies[1]["texts"]) == 25 and bodies[1]["estimator"] == "lr"


def test_unreachable_is_raised_when_nothing_answers():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with sc.Gateway("http://seam.test", transport=httpx.MockTransport(refuse)) as seam, pytest.raises(sc.Unreachable) as raised:
        seam.pipeline("p")
    assert "cannot reach http://seam.test/v1/pipelines/p" in raised.value.detail
