"""The live-feed websocket endpoint: authenticate, subscribe to a viewport, get frames.

Protocol (client -> server, JSON text messages; see ``docs/gateway.md``):

* first message ``{"t":"auth","token":"<access JWT>"}`` or ``{"t":"auth","ticket":"<one-time>"}``
  or, when the public map is enabled, ``{"t":"auth"}`` (anonymous viewer: cars, no ride events);
* ``{"t":"sub","bbox":[west,south,east,north]}`` to choose the viewport (re-send when it moves);
* ``{"t":"ping"}`` -> ``{"t":"pong"}``;
* ``{"t":"auth","token":...}`` again at any time: re-authenticates the open socket (a new
  ``hello`` answers; a token that does not verify gets an ``invalid_token`` error and changes nothing).

Limits, before and after authentication: the handshake's ``Origin`` must be on the allow-list
(``RIDEHAIL_WS_ALLOWED_ORIGINS``, default the gateway's own origins; 403 otherwise; clients that
send none are not browsers and pass), at most ``RIDEHAIL_WS_MAX_UNAUTHENTICATED`` connections wait
for their auth message at once, at most ``RIDEHAIL_WS_MAX_PER_ADDRESS`` come from one address, and
a socket whose token expires is closed (4401 "token expired") unless it re-authenticated.

Close codes: 4401 unauthenticated (missing, invalid or expired token), 4403 role not allowed,
4408 no auth message in time, 4429 too many bad or rate-limited messages, 4008 too slow (see
:mod:`ridehail.gateway.hub`), 1013 server full, too many unauthenticated connections or too many
from one address, 1009 message above the hard size limit.
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
from ridehail.gateway.hub import Hub
from ridehail.gateway.live_state import BBox, Client
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore

log = get_logger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_ABUSIVE = 4429
CLOSE_SERVER_FULL = 1013
ANONYMOUS = Principal(sub="", role="viewer", jti="", exp=0)
REAUTH = "reauth"
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
        self.unauthenticated = 0  # connections waiting for their auth message
        self.per_address: dict[str, int] = {}

    def send_now(self, conn: ServerConnection, message: dict[str, Any]) -> None:
        """Write without waiting: a client that does not read never blocks its own handler either."""
        broadcast([conn], orjson.dumps(message), text=True)

    def error(self, conn: ServerConnection, code: str, msg: str) -> None:
        metrics.CLIENT_ERRORS.labels(code).inc()
        self.send_now(conn, {"t": "err", "code": code, "msg": msg})

    async def handler(self, conn: ServerConnection) -> None:
        address = str(conn.remote_address[0]) if conn.remote_address else "unknown"
        if self.per_address.get(address, 0) >= self.settings.ws_max_per_address:
            metrics.AUTH_REFUSED.labels(str(CLOSE_SERVER_FULL)).inc()
            await conn.close(CLOSE_SERVER_FULL, "too many connections from your address")
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        try:
            await self._serve(conn)
        finally:
            left = self.per_address.get(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)

    async def _serve(self, conn: ServerConnection) -> None:
        if len(self.hub.clients) >= self.settings.ws_max_clients:
            await conn.close(CLOSE_SERVER_FULL, "server full, retry later")
            return
        if self.unauthenticated >= self.settings.ws_max_unauthenticated:
            metrics.AUTH_REFUSED.labels(str(CLOSE_SERVER_FULL)).inc()
            await conn.close(CLOSE_SERVER_FULL, "too many unauthenticated connections, retry later")
            return
        self.unauthenticated += 1
        try:
            principal = await self.authenticate(conn)
        except Refused as exc:
            metrics.AUTH_REFUSED.labels(str(exc.code)).inc()
            log.info("ws_auth_refused", code=exc.code, reason=exc.reason)
            await conn.close(exc.code, exc.reason)
            return
        except ConnectionClosed:
            return
        finally:
            self.unauthenticated -= 1
        client = Client(conn=conn, sub=None, role="viewer", sees_all_rides=False)
        self.hub.add(client)
        log.info("ws_client_joined", client=conn.id.hex[:8], role=principal.role, clients=len(self.hub.clients))
        expiry = Expiry(conn)
        self.welcome(conn, client, principal, expiry)
        try:
            await self.serve_client(conn, client, expiry)
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self.hub.remove(client)
            log.info("ws_client_left", client=conn.id.hex[:8], code=conn.close_code)

    def welcome(self, conn: ServerConnection, client: Client, principal: Principal, expiry: Expiry) -> None:
        """Who the socket speaks for from now on (first auth or a re-auth), and the ``hello`` saying so."""
        client.sub = principal.sub or None
        client.role = principal.role
        client.sees_all_rides = principal.role in ("admin", "viewer") and bool(principal.sub)
        expiry.at(principal.exp if principal.sub else None)
        self.send_now(
            conn,
            {
                "t": "hello",
                "role": principal.role,
                "sub": principal.sub or None,
                "frame_ms": self.settings.frame_interval_ms,
                "anonymous": not principal.sub,
                "exp": principal.exp or None,
            },
        )

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
        return await self.principal_of(msg)

    async def principal_of(self, msg: dict[str, Any]) -> Principal:
        """The principal an auth message proves, or :class:`Refused` with the reason."""
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

    async def serve_client(self, conn: ServerConnection, client: Client, expiry: Expiry | None = None) -> None:
        s = self.settings
        bucket = TokenBucket(s.ws_client_msgs_per_s, s.ws_client_burst)
        violations = 0
        async for raw in conn:
            problem = self.handle_message(conn, client, raw, bucket)
            if problem == REAUTH:
                problem = await self.reauthenticate(conn, client, raw, expiry)
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
            self.hub.woken.set()  # the new viewport's cars in the next round, not after an idle one
            return None
        if kind == "ping":
            self.send_now(conn, {"t": "pong", "ts": time.time_ns() // 1_000_000})
            return None
        if kind == "auth":
            return REAUTH  # verified by serve_client (verification may fetch keys: it awaits)
        self.error(conn, "unknown_type", f"unknown message type {str(kind)[:32]!r}; expected sub, ping or auth")
        return "unknown_type"

    async def reauthenticate(
        self, conn: ServerConnection, client: Client, raw: str | bytes, expiry: Expiry | None
    ) -> str | None:
        """A new auth message on the open socket: the new principal from now on, or an error frame
        (``invalid_token``, ``forbidden``) and nothing changes."""
        msg = orjson.loads(raw)
        try:
            principal = await self.principal_of(msg)
        except Refused as exc:
            code = "forbidden" if exc.code == CLOSE_FORBIDDEN else "invalid_token"
            self.error(conn, code, exc.reason)
            return code
        if expiry is not None:
            self.welcome(conn, client, principal, expiry)
        log.info("ws_client_reauthenticated", client=conn.id.hex[:8], role=principal.role)
        return None


class Expiry:
    """Closes the socket (4401 "token expired") when the token it authenticated with expires."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def at(self, exp: int | None) -> None:
        """Expire at epoch second ``exp`` (None: never, e.g. an anonymous viewer)."""
        self.cancel()
        if exp is not None:
            delay = max(0.0, exp - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        metrics.AUTH_REFUSED.labels(str(CLOSE_UNAUTHENTICATED)).inc()
        self._task = asyncio.get_running_loop().create_task(self.conn.close(CLOSE_UNAUTHENTICATED, "token expired"))

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
