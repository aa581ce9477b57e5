"""services.http.web: every error leaves as problem+json; bodies over the limit get 413."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from services.errors import (
    PROBLEM_BASE,
    PROBLEM_CONTENT_TYPE,
    IncompatiblePipeline,
    ModelNotFound,
    Overloaded,
    Unauthorized,
    UpstreamUnavailable,
)
from services.http.web import BodyLimitMiddleware, install_problem_handlers, problem_response

LIMIT = 1024


class EncodeRequest(BaseModel):
    texts: list[str]
    batch: int = 1


def make_app(max_bytes: int = LIMIT) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)

    @app.post("/encode")
    async def encode(body: EncodeRequest) -> dict:
        return {"n": len(body.texts), "batch": body.batch}

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.post("/stream")
    async def stream(request: Request) -> dict:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"bytes": n}

    @app.get("/models/{name}")
    async def get_model(name: str) -> dict:
        raise ModelNotFound(f"no model named {name!r}", name=name)

    @app.get("/pipelines/{name}")
    async def get_pipeline(name: str) -> dict:
        raise IncompatiblePipeline(
            "the encoder's output does not fit the model",
            mismatches=[{"field": "dim", "expected": 768, "actual": 384, "producer": "encoder", "consumer": name}],
        )

    @app.get("/busy")
    async def busy() -> dict:
        raise Overloaded("the queue is full", retry_after=2)

    @app.get("/private")
    async def private() -> dict:
        raise Unauthorized("send the internal token")

    @app.get("/upstream")
    async def upstream() -> dict:
        raise UpstreamUnavailable("encoder unreachable", upstream="encoder")

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret connection string user:pw@db")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= set(body)
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# ---- SeamError subclasses ---------------------------------------------------------------------


async def test_seam_error_becomes_its_status_and_fields(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/models/intent"), 404)
    assert body == {
        "type": PROBLEM_BASE + "model-not-found",
        "title": "Model not found",
        "status": 404,
        "detail": "no model named 'intent'",
        "instance": "/models/intent",
        "name": "intent",
    }


async def test_incompatible_pipeline_lists_mismatches(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/pipelines/intent"), 409)
    assert body["type"] == PROBLEM_BASE + "incompatible-pipeline"
    assert body["mismatches"] == [
        {"field": "dim", "expected": 768, "actual": 384, "producer": "encoder", "consumer": "intent"}
    ]


async def test_overloaded_sends_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.get("/busy")
    problem(response, 429)
    assert response.headers["retry-after"] == "2"


async def test_unauthorized_sends_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get("/private")
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_server_side_seam_error_keeps_its_status(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/upstream"), 503)
    assert body["upstream"] == "encoder"


async def test_mismatch_models_in_extra_are_serialised() -> None:
    from services.compatibility import Mismatch

    m = Mismatch(field="dim", expected=768, actual=384, message="m", producer="p", consumer="c")
    response = problem_response(IncompatiblePipeline("x", mismatches=[m]).to_problem("/p"))
    assert response.status_code == 409
    assert response.media_type == PROBLEM_CONTENT_TYPE
    assert b'"mismatches":[{"field":"dim","expected":768,"actual":384' in response.body


# ---- request validation -----------------------------------------------------------------------


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/encode", content=b'{"texts": ["a",', headers={"content-type": "application/json"})
    body = problem(response, 400)
    assert body["type"] == PROBLEM_BASE + "malformed-request"
    assert "not valid JSON" in body["detail"]
    assert body["instance"] == "/encode"


async def test_wrong_field_types_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    body = problem(await client.post("/encode", json={"texts": "hello", "batch": "many"}), 422)
    assert body["type"] == PROBLEM_BASE + "invalid-input"
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"texts", "batch"}
    assert "texts" in body["detail"] and "batch" in body["detail"]
    assert all(e["message"] and e["type"] for e in body["errors"])


async def test_nested_field_is_named_by_path(client: httpx.AsyncClient) -> None:
    body = problem(await client.post("/encode", json={"texts": ["ok", 5]}), 422)
    assert [e["field"] for e in body["errors"]] == ["texts.1"]


async def test_missing_field_is_422(client: httpx.AsyncClient) -> None:
    body = problem(await client.post("/encode", json={}), 422)
    assert [e["field"] for e in body["errors"]] == ["texts"]
    assert body["errors"][0]["type"] == "missing"


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    body = problem(await client.post("/encode"), 422)
    assert body["errors"][0]["field"] == "body"


async def test_valid_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/encode", json={"texts": ["a", "b"], "batch": 2})
    assert response.status_code == 200
    assert response.json() == {"n": 2, "batch": 2}


# ---- routing errors and crashes ---------------------------------------------------------------


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/nowhere"), 404)
    assert body["title"] == "Not found"
    assert body["instance"] == "/nowhere"


async def test_wrong_method_is_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/encode")
    body = problem(response, 405)
    assert body["title"] == "Method not allowed"
    assert response.headers["allow"] == "POST"


async def test_unexpected_exception_is_500_problem_without_leaking() -> None:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/boom")
    body = problem(response, 500)
    assert body["type"] == PROBLEM_BASE + "internal"
    assert "RuntimeError" in body["detail"]
    assert "secret" not in response.text
    assert body["instance"] == "/boom"
    # starlette re-raises after answering and uvicorn drops the connection: the answer says so
    assert response.headers["connection"] == "close"


# ---- body limit -------------------------------------------------------------------------------


def assert_payload_too_large(response: httpx.Response, path: str) -> None:
    body = problem(response, 413)
    assert body["type"] == PROBLEM_BASE + "payload-too-large"
    assert body["limit_bytes"] == LIMIT
    assert str(LIMIT) in body["detail"]
    assert body["instance"] == path


@pytest.mark.parametrize("path", ["/encode", "/raw", "/stream"])
async def test_declared_content_length_over_limit_is_413(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, content=b"x" * (LIMIT + 1), headers={"content-type": "application/json"})
    assert_payload_too_large(response, path)


@pytest.mark.parametrize("path", ["/encode", "/raw", "/stream"])
async def test_chunked_body_over_limit_is_413(client: httpx.AsyncClient, path: str) -> None:
    parts = [b'{"texts": ["', b"x" * (LIMIT // 2), b"x" * (LIMIT // 2), b'"]}']
    response = await client.post(path, content=chunks(*parts), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_payload_too_large(response, path)


@pytest.mark.parametrize("path", ["/raw", "/stream"])
async def test_body_at_the_limit_passes(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.post(path, content=b"x" * LIMIT)).json() == {"bytes": LIMIT}
    streamed = await client.post(path, content=chunks(b"x" * (LIMIT // 2), b"x" * (LIMIT // 2)))
    assert streamed.json() == {"bytes": LIMIT}


async def test_json_body_under_the_limit_passes_in_chunks(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/encode", content=chunks(b'{"texts": ', b'["a", "b"]}'), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and response.json() == {"n": 2, "batch": 1}


async def test_body_limit_does_not_affect_bodiless_requests(client: httpx.AsyncClient) -> None:
    problem(await client.get("/models/x"), 404)


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope, receive, send) -> None:
        seen.append(scope["type"])

    async def receive() -> dict:
        return {"type": "lifespan.startup"}

    async def send(message) -> None:
        pass

    await BodyLimitMiddleware(inner, max_bytes=1)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


async def test_body_limit_without_handlers_still_answers_413() -> None:
    # A bare app (no problem handlers installed) reading a streamed body still gets the 413.
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=8)

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.post("/raw", content=chunks(b"x" * 5, b"x" * 5))
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
