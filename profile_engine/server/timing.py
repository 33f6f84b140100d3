"""How long the server took: a ``Server-Timing`` header on every answer (the W3C header that
browsers' developer tools show), ``app;dur=<ms>`` from the request reaching the application
to the answer starting (for a streamed export, its first bytes). A client's own clock also
counts the network and its own waits; this one counts only the server's."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"server-timing"


class ServerTiming:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((HEADER, f"app;dur={took:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, timed)
