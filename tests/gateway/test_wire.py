"""The gateway's network wire (aiohttp) against real sockets on 127.0.0.1: what reaches the upstream,
and how refused, dropped and silent connections become the gateway's errors. The retry rule sits above
the wire: the in-process wire (httpx) takes it too."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.transport import AiohttpWire, HttpxWire
from gateway.upstreams import EncoderClient
from services.errors import UpstreamTimeout, UpstreamUnavailable
from tests.processes import free_port
from tests.rawhttp import read_request

OUTPUTS = json.dumps({"model": "m", "outputs": {}}).encode()


@dataclass
class Upstream:
    """A minimal HTTP/1.1 upstream. ``answers_per_connection``: after that many answers on one
    connection, it reads the next request and drops the connection without answering (what a
    keep-alive connection the upstream has just closed looks like to its client). ``silent``: it
    never answers at all."""

    answers_per_connection: int | None = None
    silent: bool = False
    paths: list[str] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while request := await read_request(reader):
                self.paths.append(request[1])
                if self.silent:
                    await asyncio.sleep(3600)
                if self.answers_per_connection is not None and answered >= self.answers_per_connection:
                    return
                answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Seam-Contract: abc\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(OUTPUTS), OUTPUTS))
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def serve():
    servers = []

    async def start(upstream: Upstream) -> str:
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def client(url: str, *, timeout_s: float = 5) -> EncoderClient:
    return EncoderClient(url, AiohttpWire(url, connect_timeout_s=1, max_connections=4), timeout_s=timeout_s, token="t0k")


async def test_requests_keep_a_path_prefix_and_send_the_token(serve):
    upstream = Upstream()
    url = await serve(upstream)
    encoder = client(url + "/encoder/")
    try:
        response = await encoder.request("outputs", "GET", "/v1/outputs", params={"version": 2})
        assert response.status_code == 200 and response.json() == json.loads(OUTPUTS)
        assert response.headers["x-seam-contract"] == "abc"  # headers are case-insensitive
        assert upstream.paths == ["/encoder/v1/outputs?version=2"]
    finally:
        await encoder.wire.aclose()


async def test_a_connection_dropped_by_the_upstream_is_retried_once_on_a_fresh_one(serve):
    upstream = Upstream(answers_per_connection=1)
    encoder = client(await serve(upstream))
    try:
        # POST, like encode and predict (aiohttp goes again by itself only for GET and the like).
        for _ in range(2):  # the second finds its pooled connection dropped, and goes again on a new one
            response = await encoder.request("encode", "POST", "/v1/encode", json={"texts": ["a"]})
            assert response.status_code == 200
        assert upstream.connections == 2 and len(upstream.paths) == 3
        with pytest.raises(UpstreamUnavailable, match="encoder http://127.0.0.1:.* is unreachable \\(no retry\\)"):
            await encoder.request("no retry", "POST", "/v1/fit", retry=False, content=b"{}")  # like a fit: never twice
    finally:
        await encoder.wire.aclose()


async def test_a_refused_connection_is_unavailable_naming_the_upstream():
    url = f"http://127.0.0.1:{free_port()}"
    encoder = client(url)
    try:
        with pytest.raises(UpstreamUnavailable, match=f"encoder {url} is unreachable \\(outputs\\)"):
            await encoder.outputs()
    finally:
        await encoder.wire.aclose()


async def test_a_silent_upstream_times_out_naming_the_setting(serve):
    encoder = client(await serve(Upstream(silent=True)), timeout_s=0.3)
    try:
        with pytest.raises(UpstreamTimeout, match="did not answer within 0.3s \\(outputs\\); raise GATEWAY_TIMEOUT_S"):
            await encoder.outputs()
    finally:
        await encoder.wire.aclose()


class RefusesFirst(httpx.AsyncBaseTransport):
    """Refuses the first ``refusals`` connections (an upstream restarting), then answers."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.calls = refusals, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.refusals:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, content=OUTPUTS, headers={"content-type": "application/json"})


def in_process(transport: httpx.AsyncBaseTransport) -> EncoderClient:
    url = "http://encoder.test"
    return EncoderClient(url, HttpxWire(url, transport), timeout_s=5)


async def test_a_refused_connection_goes_once_more_even_for_a_call_never_retried():
    transport = RefusesFirst(1)
    encoder = in_process(transport)
    try:
        response = await encoder.request("no retry", "POST", "/v1/fit", retry=False, content=b"{}")  # nothing was sent
        assert response.status_code == 200 and transport.calls == 2
    finally:
        await encoder.wire.aclose()


async def test_a_connection_refused_twice_is_unavailable_naming_the_upstream():
    transport = RefusesFirst(2)
    encoder = in_process(transport)
    try:
        with pytest.raises(UpstreamUnavailable, match="encoder http://encoder.test is unreachable \\(outputs\\): ConnectError"):
            await encoder.outputs()
        assert transport.calls == 2
    finally:
        await encoder.wire.aclose()
