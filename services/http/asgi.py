"""Two ASGI pieces the kit's middleware share: a middleware for HTTP requests only, and a ``send``
that remembers the response's status."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HTTPMiddleware:
    """Hands each HTTP request to :meth:`handle`; anything else (lifespan, websockets) goes straight to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RecordingSend:
    """An ASGI ``send`` that passes each message on (the response's start through ``edit``, when
    given) and keeps the response's status (500 until one starts)."""

    def __init__(self, send: Send, edit: Callable[[Message], Message] | None = None) -> None:
        self.send = send
        self.edit = edit
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.edit is not None:
                message = self.edit(message)
        await self.send(message)
