"""ASGI middleware of the web server: the request body limit and the security headers."""

from __future__ import annotations

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """413 for a request body over ``limit`` bytes: at once from Content-Length, or as soon
    as a chunked body passes the limit (the app never sees more than ``limit`` bytes)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, watching)
        except _TooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than server.max_body ({self.limit} bytes)"
        if scope["path"].startswith("/api/"):
            from nightwatch.app.api import error_body

            response: Response = JSONResponse(error_body(413, detail), 413, headers={"Connection": "close"})
        else:
            response = PlainTextResponse(detail + "\n", 413, headers={"Connection": "close"})
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),  # a log or a name is never sniffed into HTML
    (b"x-frame-options", b"DENY"),  # no page in a frame of another site (clickjacking the buttons)
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def adding(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, adding)
