"""services.http.bodies and the body checks of BodyLimitMiddleware: JSON too deep is refused from the raw
bytes before anything parses it; a body that does not arrive in time is a 408."""

from __future__ import annotations

import asyncio
import json
import timeit

import httpx
import pytest
from fastapi import FastAPI, Request

from services.http.bodies import json_depth, json_part
from services.codecs import BINARY_CONTENT_TYPE, encode_binary
from services.http.web import BodyLimitMiddleware, install_problem_handlers

import numpy as np


@pytest.mark.parametrize(
    ("body", "limit", "depth"),
    [
        (b"[" * 3000 + b"]" * 3000, 64, 3000),
        (b'{"a": {"b": [[1]]}}', 3, 4),
        (b'{"a": {"b": [[1]]}}', 4, 0),
        (b'{"text": "' + b"[" * 500 + b'"}', 8, 0),  # brackets inside a string do not nest
        (b'{"text": "\\"' + b"{" * 500 + b'"}', 8, 0),  # nor after an escaped quote
        (b'["\\\\", ' + b"[" * 100 + b"]" * 100 + b"]", 50, 101),  # an escaped backslash ends no string
        (b'"unterminated [[[[[[[[[[', 2, 0),
        (b"", 2, 0),
    ],
)
def test_json_depth(body: bytes, limit: int, depth: int) -> None:
    assert json_depth(body, limit) == depth


def test_json_depth_matches_what_json_sees() -> None:
    value: object = 1
    for i in range(70):
        value = [value] if i % 2 else {"k[": value, "s": "]]]}}}"}
    body = json.dumps(value).encode()
    assert json_depth(body, 64) == 70
    assert json_depth(body, 70) == 0


def test_json_part_takes_the_json_of_binary_bodies() -> None:
    frame = encode_binary(np.ones((2, 3), np.float32), {"k": [1]})
    assert json.loads(json_part(frame, BINARY_CONTENT_TYPE, None))["meta"] == {"k": [1]}
    assert json_part(b'{"a": 1}[[[[', "application/octet-stream", "8") == b'{"a": 1}'
    assert json_part(b"{}", "application/json", None) == b"{}"


def test_an_ordinary_body_costs_microseconds() -> None:
    body = json.dumps({"texts": ["where is my parcel"] * 8}).encode()
    assert timeit.timeit(lambda: json_depth(body, 64), number=1000) / 1000 < 50e-6


def make_app(**limits) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=10_000, prefix="T_", **limits)

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    return app


async def test_deep_json_is_400_before_the_route() -> None:
    transport = httpx.ASGITransport(app=make_app(max_depth=8))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/raw", content=b"[" * 9 + b"]" * 9)
        assert response.status_code == 400
        assert "nests JSON 9 levels deep; the limit is 8 (T_MAX_JSON_DEPTH)" in response.json()["detail"]
        assert (await client.post("/raw", content=b"[" * 8 + b"]" * 8)).json() == {"bytes": 16}
        frame = encode_binary(np.ones((1, 1), np.float32), {"x": [[[[[[[[[1]]]]]]]]]})
        response = await client.post("/raw", content=frame, headers={"content-type": BINARY_CONTENT_TYPE})
        assert response.status_code == 400


async def test_a_body_slower_than_the_timeout_is_408() -> None:
    async def trickle():
        yield b"["
        await asyncio.sleep(0.5)
        yield b"]"

    transport = httpx.ASGITransport(app=make_app(timeout_s=0.1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/raw", content=trickle())
    assert response.status_code == 408
    assert response.headers["connection"] == "close"
    assert "within 0.1 s (T_BODY_TIMEOUT_S)" in response.json()["detail"]


# ---- texts without content (services.inputs) ---------------------------------------------------

from services.errors import InvalidInput  # noqa: E402
from services.inputs import check_texts, has_content  # noqa: E402


@pytest.mark.parametrize("text", ["", " \t\n", "\u200b\u200c\u200d", "\x00\x01\x7f", "\u0301\u0308", "\ufeff\u2060\u202e",
                                  "\U000e0001", "\u3000\u00a0", "\u0301\U000e0020\u200b"])
def test_texts_of_invisible_characters_have_no_content(text: str) -> None:
    assert not has_content(text)
    with pytest.raises(InvalidInput, match=r"texts\[1\] is empty"):
        check_texts(["ok", text], max_texts=4, setting="S")


@pytest.mark.parametrize("text", ["a", "é", "e\u0301", "中文", "😀", "\u200b€", "?", "\ue000", "\u200b" * 100 + "\U0001f600"])
def test_texts_with_a_letter_number_symbol_or_punctuation_have_content(text: str) -> None:
    assert has_content(text)


def test_the_content_check_is_cheap() -> None:
    has_content("warm")
    assert timeit.timeit(lambda: has_content("where is my parcel"), number=1000) / 1000 < 20e-6
    hostile = "\u200b" * 19_999 + "€"  # the whole text is scanned, at C speed
    assert timeit.timeit(lambda: has_content(hostile), number=10) / 10 < 5e-3
