"""Gateway service settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost"})


class GatewaySettings(CommonSettings):
    map_tiles: Literal["none", "osm"] = Field(
        default="none",
        description="Map basemap: none (offline, roads drawn from the shipped GeoJSON) or osm (online tiles).",
    )
    gateway_max_body_bytes: int = Field(
        default=16384,
        ge=1024,
        le=1_048_576,
        description="Largest request body any gateway route accepts, declared or chunked (else 413).",
    )
    ride_requests_per_minute: int = Field(
        default=6,
        ge=1,
        le=10_000,
        description="Ride requests (POST /api/rides) one rider may make per minute, refused ones included (429).",
    )
    frame_interval_ms: int = Field(
        default=25,
        ge=20,
        le=5000,
        description="Websocket frame interval: at most one car frame per client per this; a round with no change "
        "sends nothing (25 ms: a simulator step's pings reach the gateway in more than one fetch, and at 100 ms a "
        "round between two of them made the later part wait a whole round: docs/performance.md).",
    )
    frame_on_change: bool = Field(
        default=False,
        description="A frame round as soon as the live feed brings something, at most one per frame interval, "
        "instead of rounds on a fixed clock (not shown to help at 1,000-3,000 drivers with 100 ms rounds: "
        "docs/performance.md).",
    )
    stats_interval_ms: int = Field(
        default=1000, ge=200, le=60000, description="Interval of the stats frame sent to every map client."
    )
    ws_ping_interval_s: float = Field(
        default=5.0, gt=0, le=120, description="Websocket heartbeat: ping every client this often."
    )
    ws_ping_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Websocket heartbeat: drop a client whose pong is this late."
    )
    ws_auth_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="A websocket client must authenticate within this many seconds."
    )
    ws_max_message_bytes: int = Field(
        default=4096, ge=256, le=65536, description="Largest client message accepted; larger gets an error frame."
    )
    ws_write_buffer_limit_bytes: int = Field(
        default=1_048_576,
        ge=16_384,
        description="A client whose unsent bytes exceed this gets no new frames (its cars collapse to latest).",
    )
    ws_slow_client_grace_s: float = Field(
        default=5.0, gt=0, le=300, description="A client above the write buffer limit this long is closed (4008)."
    )
    ws_max_clients: int = Field(default=1000, ge=1, description="Most websocket clients served at once.")
    ws_max_unauthenticated: int = Field(
        default=100,
        ge=1,
        description="Most websocket connections waiting for their auth message at once; more are closed (1013).",
    )
    ws_max_per_address: int = Field(
        default=64, ge=1, description="Most websocket connections from one client address at once (1013 beyond)."
    )
    ws_allowed_origins: str = Field(
        default="",
        description="Comma-separated Origin values a browser may open the websocket from (others: 403 at the "
        "handshake; clients that send no Origin are not browsers and pass). Unset: the gateway's own public "
        "origins, http(s)://PUBLIC_HOST:GATEWAY_PORT (plus localhost and 127.0.0.1 when PUBLIC_HOST is either).",
    )
    ws_public_map: bool = Field(
        default=True,
        description="Let map clients without a token watch the cars (no ride events). False: a token is required.",
    )
    ws_roles: str = Field(
        default="rider,viewer,admin",
        pattern=r"^[a-z]+(,[a-z]+)*$",
        description="Token roles allowed on the live feed (comma-separated).",
    )
    ws_client_msgs_per_s: float = Field(
        default=5.0, gt=0, description="Client message rate limit (token bucket refill per second)."
    )
    ws_client_burst: int = Field(default=20, ge=1, description="Client message rate limit burst size.")
    ws_client_max_violations: int = Field(
        default=20, ge=1, description="Bad or rate-limited client messages before the connection is closed (4429)."
    )
    car_ttl_s: float = Field(
        default=120.0, gt=0, description="A car not heard from this long is forgotten by the gateway."
    )
    matching_stats_url: str | None = Field(
        default=None,
        description="Matching stats JSON URL polled for the consumer lag (unset: http://HOST:MATCHING_PORT/stats).",
    )
    quote_router_at_start: bool = Field(
        default=False,
        description=(
            "Build the quote routing tables (road graph, numpy, scipy: ~80 MB, ~1 s) when the gateway starts;"
            " false: on the first POST /api/quotes, which then waits for them."
        ),
    )
    roads_path: str | None = Field(
        default=None, description="Road GeoJSON served at /static/roads.geojson (unset: data/gothenburg.roads.geojson)."
    )

    @property
    def ws_origins(self) -> list[str]:
        """The Origin values accepted at the websocket handshake."""
        if self.ws_allowed_origins.strip():
            return [o.strip().rstrip("/") for o in self.ws_allowed_origins.split(",") if o.strip()]
        hosts = [self.public_host]
        if self.public_host in LOOPBACK_NAMES:
            hosts = sorted(LOOPBACK_NAMES)
        return [f"{scheme}://{host}:{self.gateway_port}" for host in hosts for scheme in ("http", "https")]

    @property
    def ws_allowed_roles(self) -> frozenset[str]:
        return frozenset(self.ws_roles.split(","))

    @property
    def matching_stats(self) -> str:
        return self.matching_stats_url or f"http://{self.host}:{self.matching_port}/stats"
