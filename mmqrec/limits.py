"""Request limits of the HTTP service, and the ASGI middleware that bounds request bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may carry; anything larger is refused before any model work."""

    max_body_bytes: int = 1 << 20
    """Largest request body (413 above it). A history of ``max_history_items`` ids of
    ``max_id_chars`` characters needs at most about 260 KB."""
    max_history_items: int = 1000
    """Most item ids in a posted history (422 above it). The retriever reads only the last
    ``retriever.history.max_length`` of them; the rest only mark items as seen."""
    max_id_chars: int = 256
    """Longest user or item id in a path or a body (422 above it)."""
    max_detail_chars: int = 300
    """Error ``detail`` strings are cut to this length, so a request's values are never
    echoed whole."""


def clip_detail(text: str, limits: ServerLimits) -> str:
    """The first line of ``text``, cut to ``limits.max_detail_chars``."""
    line = text.splitlines()[0] if text else ""
    if len(line) > limits.max_detail_chars:
        line = line[: limits.max_detail_chars - 1] + "…"
    return line


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether the client announces the
    length (``Content-Length``) or streams the body in chunks."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised while the route reads its body, so the app answers it like any
                    # other HTTP error.
                    raise HTTPException(status_code=413, detail=self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"request body over {self.limit:,} bytes"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

