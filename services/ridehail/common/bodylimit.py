"""ASGI middleware refusing request bodies over a size limit with 413 (declared or streamed).

Every ridehail app installs it. By default a streamed (chunked) body is counted as the app reads
it, so a route that reads its body stops at the limit. With ``read_ahead=True`` the middleware
reads the whole body (at most ``max_bytes`` + one chunk) before the app sees the request and
replays it: every route answers 413 alike, including routes that never read their body."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream; an HTTPException so body parsers let it through as 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """413 for bodies over ``max_bytes``; on ``oauth_paths`` as an RFC 6749 error (``invalid_request``)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_ahead: bool = False,
        on_reject: Callable[[], None] | None = None,
        oauth_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_ahead = read_ahead
        self.on_reject = on_reject  # e.g. counts the refusal in the app's own metrics
        self.oauth_paths = oauth_paths

    async def _reject(self, scope: Scope, send: Send) -> None:
        if self.on_reject is not None:
            self.on_reject()
        reason = f"request body larger than {self.max_bytes} bytes"
        headers = [(b"content-type", b"application/json")]
        if scope.get("path") in self.oauth_paths:
            payload: dict[str, str] = {"error": "invalid_request", "error_description": reason}
            headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
        else:
            payload = {"detail": reason}
        body = json.dumps(payload).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._reject(scope, send)
                    return
        if self.read_ahead:
            await self._read_ahead(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, send)

    async def _read_ahead(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the app sees the disconnect
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(scope, send)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(parts), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return message
            return await receive()

        await self.app(scope, replay, send)
