"""The live-feed websocket endpoint: authenticate, subscribe to a viewport, get frames.

Protocol (client -> server, JSON text messages; see ``docs/gateway.md``):

* first message ``{"t":"auth","token":"<access JWT>"}`` or ``{"t":"auth","ticket":"<one-time>"}``
  or, when the public map is enabled, ``{"t":"auth"}`` (anonymous viewer: cars, no ride events);
* ``{"t":"sub","bbox":[west,south,east,north]}`` to choose the viewport (re-send when it moves);
* ``{"t":"ping"}`` -> ``{"t":"pong"}``.

Close codes: 4401 unauthenticated (missing, invalid or expired token), 4403 role not allowed,
4408 no auth message in time, 4429 too many bad or rate-limited messages, 4008 too slow (see
:mod:`ridehail.gateway.hub`), 1013 server full, 1009 message above the hard size limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from ridehail.common.auth_tokens import InvalidToken, Principal, TokenVerifier
from ridehail.common.logging import get_logger
from ridehail.gateway import metrics
from ridehail.gateway.hub import BBox, Client, Hub
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore

log = get_logger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_ABUSIVE = 4429
CLOSE_SERVER_FULL = 1013
ANONYMOUS = Principal(sub="", role="viewer", jti="", exp=0)
MAX_BBOX_DEG = 10.0  # a viewport wider than this is not a map of one city


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def parse_bbox(value: Any) -> BBox:
    """``[west, south, east, north]`` in degrees, or ValueError with the reason."""
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("bbox must be [west, south, east, north]")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError("bbox values must be finite numbers")
    w, s, e, n = (float(v) for v in value)
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ValueError("bbox needs -180 <= west < east <= 180 and -90 <= south < north <= 90")
    if e - w > MAX_BBOX_DEG * 4 or n - s > MAX_BBOX_DEG * 2:
        raise ValueError("bbox too large")
    return (round(w, 5), round(s, 5), round(e, 5), round(n, 5))


class LiveSocket:
    """Serves one gateway's websocket clients from its :class:`Hub`."""

    def __init__(self, hub: Hub, settings: GatewaySettings, verifier: TokenVerifier, tickets: TicketStore) -> None:
        self.hub = hub
        self.settings = settings
        self.verifier = verifier
        self.tickets = tickets
        self.allowed_roles = settings.ws_allowed_roles

    def send_now(self, conn: ServerConnection, message: dict[str, Any]) -> None:
        """Write without waiting: a client that does not read never blocks its own handler either."""
        broadcast([conn], orjson.dumps(message), text=True)

    def error(self, conn: ServerConnection, code: str, msg: str) -> None:
        metrics.CLIENT_ERRORS.labels(code).inc()
        self.send_now(conn, {"t": "err", "code": code, "msg": msg})

    async def handler(self, conn: ServerConnection) -> None:
        if len(self.hub.clients) >= self.settings.ws_max_clients:
            await conn.close(CLOSE_SERVER_FULL, "server full, retry later")
            return
        try:
            principal = await self.authenticate(conn)
        except Refused as exc:
            metrics.AUTH_REFUSED.labels(str(exc.code)).inc()
            log.info("ws_auth_refused", code=exc.code, reason=exc.reason)
            await conn.close(exc.code, exc.reason)
            return
        except ConnectionClosed:
            return
        client = Client(
            conn=conn,
            sub=principal.sub or None,
            role=principal.role,
            sees_all_rides=principal.role in ("admin", "viewer") and bool(principal.sub),
        )
        self.hub.add(client)
        log.info("ws_client_joined", client=conn.id.hex[:8], role=principal.role, clients=len(self.hub.clients))
        self.send_now(
            conn,
            {
                "t": "hello",
                "role": principal.role,
                "sub": principal.sub or None,
                "frame_ms": self.settings.frame_interval_ms,
                "anonymous": not principal.sub,
            },
        )
        try:
            await self.serve_client(conn, client)
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(client)
            log.info("ws_client_left", client=conn.id.hex[:8], code=conn.close_code)

    async def authenticate(self, conn: ServerConnection) -> Principal:
        try:
            raw = await asyncio.wait_for(conn.recv(), timeout=self.settings.ws_auth_timeout_s)
        except TimeoutError:
            raise Refused(CLOSE_AUTH_TIMEOUT, "no auth message in time") from None
        if isinstance(raw, bytes) or len(raw) > self.settings.ws_max_message_bytes:
            raise Refused(CLOSE_UNAUTHENTICATED, "first message must be a JSON auth message")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused(CLOSE_UNAUTHENTICATED, "first message must be a JSON auth message") from None
        if not isinstance(msg, dict) or msg.get("t") != "auth":
            raise Refused(CLOSE_UNAUTHENTICATED, 'first message must be {"t":"auth",...}')
        token, ticket = msg.get("token"), msg.get("ticket")
        if ticket is not None:
            principal = self.tickets.redeem(ticket) if isinstance(ticket, str) else None
            if principal is None:
                raise Refused(CLOSE_UNAUTHENTICATED, "invalid or expired ticket")
        elif token is not None:
            if not isinstance(token, str):
                raise Refused(CLOSE_UNAUTHENTICATED, "invalid token: malformed token")
            try:
                principal = await self.verifier.verify(token)
            except InvalidToken as exc:
                raise Refused(CLOSE_UNAUTHENTICATED, f"invalid token: {exc.reason}") from None
        elif self.settings.ws_public_map:
            return ANONYMOUS
        else:
            raise Refused(CLOSE_UNAUTHENTICATED, "missing token")
        if principal.role not in self.allowed_roles:
            raise Refused(CLOSE_FORBIDDEN, f"role {principal.role!r} may not watch the live feed")
        return principal

    async def serve_client(self, conn: ServerConnection, client: Client) -> None:
        s = self.settings
        bucket = TokenBucket(s.ws_client_msgs_per_s, s.ws_client_burst)
        violations = 0
        async for raw in conn:
            problem = self.handle_message(conn, client, raw, bucket)
            if problem is None:
                continue
            violations += 1
            if violations >= s.ws_client_max_violations:
                log.warning("ws_client_abusive_closed", client=conn.id.hex[:8], last=problem)
                await conn.close(CLOSE_ABUSIVE, f"too many bad or rate-limited messages (last: {problem})")
                return

    def handle_message(
        self, conn: ServerConnection, client: Client, raw: str | bytes, bucket: TokenBucket
    ) -> str | None:
        """Apply one client message; returns the error code if it was bad (after sending the error frame)."""
        if not bucket.take():
            self.error(conn, "rate_limited", "too many messages; slow down")
            return "rate_limited"
        if isinstance(raw, bytes):
            self.error(conn, "binary", "send JSON text messages")
            return "binary"
        if len(raw) > self.settings.ws_max_message_bytes:
            self.error(conn, "too_large", f"message above {self.settings.ws_max_message_bytes} bytes")
            return "too_large"
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.error(conn, "bad_json", "message is not valid JSON")
            return "bad_json"
        kind = msg.get("t") if isinstance(msg, dict) else None
        if kind == "sub":
            try:
                client.subscribe(parse_bbox(msg.get("bbox")))
            except ValueError as exc:
                self.error(conn, "bad_bbox", str(exc))
                return "bad_bbox"
            return None
        if kind == "ping":
            self.send_now(conn, {"t": "pong", "ts": time.time_ns() // 1_000_000})
            return None
        if kind == "auth":
            self.error(conn, "already_authenticated", "auth is only accepted as the first message")
            return "already_authenticated"
        self.error(conn, "unknown_type", f"unknown message type {str(kind)[:32]!r}; expected sub or ping")
        return "unknown_type"
