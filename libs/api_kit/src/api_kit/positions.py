"""Read-your-writes across requests: the ``X-DB-Position`` header.

``DbPositionMiddleware`` (pure ASGI) gives each request a ``db_shared.positions`` holder,
seeded from the request's ``X-DB-Position`` header when it holds a WAL position
(``^[0-9A-F]{1,8}/[0-9A-F]{1,8}$``, at most 17 characters; anything else is ignored).
Read sessions of the request then use a replica only once it has replayed that far. When
the request wrote (or carried a position), the response returns the furthest position in
the same header: a client that echoes it on its next request reads its own writes there
too, whichever replica that request would have used.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db_shared.positions import format_lsn, parse_lsn, position_context

__all__ = ["POSITION_HEADER", "DbPositionMiddleware"]

POSITION_HEADER = "X-DB-Position"


class DbPositionMiddleware:
    """Pure ASGI: the request's WAL position in from, and out to, ``X-DB-Position``."""

    def __init__(self, app: ASGIApp, header: str = POSITION_HEADER) -> None:
        self.app = app
        self.header = header
        self._key = header.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carried = parse_lsn(Headers(scope=scope).get(self._key))
        with position_context(carried) as positions:

            async def send_with_position(message: Message) -> None:
                if message["type"] == "http.response.start" and positions.required is not None:
                    MutableHeaders(scope=message)[self.header] = format_lsn(positions.required)
                await send(message)

            await self.app(scope, receive, send_with_position)
