"""The wire under the gateway's upstream clients: one pooled connection per upstream that sends a
request and reads the whole answer. aiohttp over the network; httpx where a test wires a service
in-process (``httpx.ASGITransport(app)``) or fakes one (``httpx.MockTransport``).

Both report a failed exchange the same way (:class:`WireError`, saying whether the request may go
once more), so the retry rule lives once, above them (``gateway.upstreams.Upstream``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

# A connection the upstream closed while it sat in the pool fails like this on first use.
_STALE_HTTPX = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_STALE_AIOHTTP = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
# Under the keep-alive timeout of uvicorn (5 s), so the gateway drops an idle connection before the
# upstream does.
KEEPALIVE_S = 4.0


@dataclass(frozen=True)
class WireResponse:
    """An upstream's answer, read in full."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    def problem(self) -> dict[str, Any]:
        """The body of a refusal: its problem+json, or its first characters as the detail."""
        try:
            body = self.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            return body
        text = self.content.decode("utf-8", errors="replace")[:300].strip()
        return {"detail": text} if text else {}


class WireError(Exception):
    """No answer came back. ``refused``: the connection was refused (the upstream restarting), so
    nothing was sent and any request may go once more; ``stale``: a pooled connection turned out
    closed by the upstream, so an idempotent request may go once more on a fresh one."""

    def __init__(self, message: str, *, refused: bool = False, stale: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.stale = stale


class Wire(Protocol):
    """Sends a request, reads the whole answer. Raises ``WireError`` when no answer comes back
    (timeouts are the caller's: ``Upstream.request``)."""

    async def send(self, method: str, path: str, *, headers: dict[str, str], params: dict[str, Any] | None = None,
                   content: bytes | None = None, json: Any = None) -> WireResponse: ...

    async def aclose(self) -> None: ...


class AiohttpWire:
    """The wire over the network: aiohttp, whose client costs a fraction of httpx's per request
    (bench/results has the gateway's figures with either)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")  # a path prefix (behind a proxy) stays: base + "/v1/..."
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        )

    async def send(self, method: str, path: str, *, headers: dict[str, str], params: dict[str, Any] | None = None,
                   content: bytes | None = None, json: Any = None) -> WireResponse:
        try:
            async with self._session.request(method, self.base_url + path, headers=headers, params=params,
                                             data=content, json=json) as response:
                return WireResponse(response.status, response.reason or "", response.headers, await response.read())
        except aiohttp.ClientConnectorError as exc:  # (a ClientOSError, but never stale)
            raise WireError(f"{type(exc).__name__}: {exc}", refused=True) from exc
        except aiohttp.ClientError as exc:
            raise WireError(f"{type(exc).__name__}: {exc or 'connection failed'}",
                            stale=isinstance(exc, _STALE_AIOHTTP)) from exc

    async def aclose(self) -> None:
        await self._session.close()


class HttpxWire:
    """The wire through an httpx transport: what tests use to wire a service in-process or fake one."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, transport=transport)

    async def send(self, method: str, path: str, *, headers: dict[str, str], params: dict[str, Any] | None = None,
                   content: bytes | None = None, json: Any = None) -> WireResponse:
        try:
            response = await self._client.request(method, path, headers=headers, params=params, content=content,
                                                  json=json, timeout=None)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.ConnectError as exc:
            raise WireError(f"{type(exc).__name__}: {exc or 'connection refused'}", refused=True) from exc
        except httpx.TransportError as exc:
            raise WireError(f"{type(exc).__name__}: {exc or 'connection failed'}",
                            stale=isinstance(exc, _STALE_HTTPX)) from exc
        return WireResponse(response.status_code, response.reason_phrase, response.headers, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def build_wire(base_url: str, *, connect_timeout_s: float, max_connections: int,
               transport: httpx.AsyncBaseTransport | None = None) -> Wire:
    """One pooled wire per upstream, kept for the app's lifetime (close it with ``aclose``)."""
    if transport is not None:
        return HttpxWire(base_url, transport)
    return AiohttpWire(base_url, connect_timeout_s=connect_timeout_s, max_connections=max_connections)
