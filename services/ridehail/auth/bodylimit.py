"""ASGI middleware refusing request bodies over a size limit with 413 (declared or streamed)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream; an HTTPException so body parsers let it through as 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """413 for bodies over ``max_bytes``; on ``oauth_paths`` as an RFC 6749 error (``invalid_request``)."""

    def __init__(self, app: ASGIApp, max_bytes: int, oauth_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.oauth_paths = oauth_paths

    async def _reject(self, scope: Scope, send: Send) -> None:
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
