"""Reading HTTP/1.1 requests off a raw asyncio stream: for the minimal servers tests stand up on
127.0.0.1 when they need to control the connection itself (drop it, stay silent)."""

from __future__ import annotations

import asyncio

from bench.loadgen import read_body


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """The next request's method and target (path and query), its body read off the stream; ``None``
    once the client has closed the connection."""
    request_line = await reader.readline()
    if not request_line:
        return None
    await read_body(reader)
    method, target, _ = request_line.decode().split(" ", 2)
    return method, target
