"""A small HTTP/1.1 keep-alive client on raw asyncio protocols, for posting pings fast.

httpx and aiohttp spend 100-300 us of Python per request; at tens of thousands of pings per
second on two cores that would make the load generator, not the server, the thing measured.
This client writes one pre-formatted request per connection and parses only the status line,
``Content-Length`` and ``Retry-After`` of the answer. One request in flight per connection (no
pipelining), a fixed pool of connections opened lazily and reopened after an error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpTransportError(ConnectionError):
    """No HTTP answer: connection refused or reset, or no answer within the timeout.

    ``kind`` says which: ``refused``, ``connect_timeout``, ``connect_failed``, ``reset`` (the
    connection was lost before the answer), ``timeout`` (no answer in time) or ``bad_answer``."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True, frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    retry_after_s: float | None


def _header_value(head: bytes, name: bytes) -> bytes | None:
    i = head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    j = head.find(b"\r\n", start)
    return head[start : j if j >= 0 else len(head)].strip()


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[HttpAnswer] | None = None
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf.extend(data)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length_raw = _header_value(head, b"content-length")
        length = int(length_raw) if length_raw and length_raw.isdigit() else 0
        total = end + 4 + length
        if len(self.buf) < total:
            return
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        try:
            status = int(head[9:12])
        except ValueError:
            waiter.set_exception(HttpTransportError(f"bad status line: {head[:40]!r}", "bad_answer"))
            return
        retry_raw = _header_value(head, b"retry-after")
        retry = float(retry_raw) if retry_raw and retry_raw.replace(b".", b"", 1).isdigit() else None
        if _header_value(head, b"connection") == b"close":
            self.alive = False
        waiter.set_result(HttpAnswer(status, body, retry))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(HttpTransportError(f"connection lost: {exc!r}", "reset"))

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class HttpPingClient:
    """``await post(body)`` on one of ``connections`` keep-alive connections to ``url``."""

    def __init__(self, url: str, connections: int = 64, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http:// URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.timeout_s = timeout_s
        self.connections = connections
        self._prefix = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._free: asyncio.LifoQueue[_Connection | None] = asyncio.LifoQueue()
        for _ in range(connections):
            self._free.put_nowait(None)
        self._all: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), timeout=self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            kind = (
                "refused"
                if isinstance(exc, ConnectionRefusedError)
                else "connect_timeout"
                if isinstance(exc, TimeoutError)
                else "connect_failed"
            )
            raise HttpTransportError(f"connect failed: {exc!r}", kind) from None
        self._all.add(conn)
        return conn

    async def post(self, body: bytes, token: str | None = None) -> HttpAnswer:
        """POST ``body`` (with ``Authorization: Bearer <token>`` when given)."""
        conn = await self._free.get()
        try:
            if conn is None or not conn.alive:
                if conn is not None:
                    self._all.discard(conn)
                conn = None
                conn = await self._connect()
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[HttpAnswer] = loop.create_future()
            conn.waiter = fut
            assert conn.transport is not None
            auth = b"\r\nAuthorization: Bearer " + token.encode() if token else b""
            conn.transport.write(self._prefix + str(len(body)).encode() + auth + b"\r\n\r\n" + body)
            timer = loop.call_later(self.timeout_s, _expire, fut)
            try:
                return await fut
            finally:
                timer.cancel()
                conn.waiter = None
        except BaseException:
            if conn is not None:
                conn.close()
                self._all.discard(conn)
                conn = None
            raise
        finally:
            self._free.put_nowait(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()


def _expire(fut: asyncio.Future[HttpAnswer]) -> None:
    if not fut.done():
        fut.set_exception(HttpTransportError("no answer within the timeout", "timeout"))
