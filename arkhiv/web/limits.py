"""A bound on request bodies, enforced before any route, parser or authentication sees them.

Without it, a stranger's 300 MB JSON body to any route was read and parsed (and the server's
memory grew by as much) before the route answered 403. Bodies are counted as they stream in, so
a client that sends no Content-Length (chunked) is stopped at the limit too: at most `limit`
bytes are ever held.

Routes that take files stream them to disk under their own limits and are not bounded here: the
resumable uploads (tus) and the package submission API. The two submission forms carry one
upload id per file of a bag folder (thousands of fields), so they get a larger, separate bound.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: answer 413 when a request's body exceeds its bound.

    `unbounded(method, path)` names the routes that stream their bodies to disk themselves;
    `larger(method, path)` those that get `larger_limit` instead of `limit`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        larger_limit: int,
        unbounded: Callable[[str, str], bool],
        larger: Callable[[str, str], bool],
    ) -> None:
        self.app = app
        self.limit = limit
        self.larger_limit = larger_limit
        self.unbounded = unbounded
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if self.unbounded(method, path):
            await self.app(scope, receive, send)
            return
        limit, setting = (
            (self.larger_limit, "server.max_form_bytes")
            if self.larger(method, path)
            else (self.limit, "server.max_body_bytes")
        )
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit, setting)  # refused without reading a byte of it
            return
        # Read the whole body (at most `limit` bytes) before the application runs, so that no
        # parser and no authentication work ever starts on an oversized request.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the application see that as it would have.
                await self.app(scope, _replay([], message, receive), send)
                return
            body = message.get("body", b"")
            received += len(body)
            if received > limit:
                await _too_large(send, limit, setting)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """The body read ahead, as one message; then the client's own messages (a disconnect)."""
    first: list[Message] = (
        [pending]
        if pending is not None
        else [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    )

    async def replayed() -> Message:
        if first:
            return first.pop()
        return await receive()

    return replayed


async def _too_large(send: Send, limit: int, setting: str) -> None:
    body = json.dumps(
        {
            "detail": f"the request body is larger than this route accepts ({limit} bytes, "
            f"{setting}); files go through the uploads or the submissions API"
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
