"""What the live hub holds: one car's latest state (and how it is encoded in a frame), one
websocket client's subscription and progress, the hub's counters, and the frame envelope. The
frame format is documented in ``docs/gateway.md``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.server import ServerConnection

STATUS_CODES = {"available": 0, "to_pickup": 1, "on_trip": 2, "offline": 3}
OFFLINE, OFFERED = 3, 4  # offered: an open offer holds the car (from the ride events, not from its pings)
RIDE_EVENT_QUEUE = 200

BBox = tuple[float, float, float, float]  # west, south, east, north


@dataclass(slots=True)
class Car:
    car_id: str
    lat: float
    lon: float
    status: int
    ts: int
    seq: int
    heading: float
    ride: str | None
    seen: float  # monotonic receive time
    round: int = 0
    frag: bytes = b""
    offered: bool = False  # an open offer holds it
    silent: bool = False  # no ping for the presence TTL: shown offline until its next ping
    new_ping: bool = False  # changed by a ping since its last frame (not only by a ride event or silence)

    @property
    def shown_status(self) -> int:
        if self.silent:
            return OFFLINE
        if self.offered and self.status == STATUS_CODES["available"]:
            return OFFERED
        return self.status

    def encode(self) -> bytes:
        lat, lon = round(self.lat, 6), round(self.lon, 6)
        return orjson.dumps([self.car_id, lat, lon, self.shown_status, self.ts, self.ride, int(self.heading)])


@dataclass(eq=False)
class Client:
    """One websocket client: who it is, what it looks at, how far it has been served."""

    conn: ServerConnection
    sub: str | None
    role: str
    sees_all_rides: bool
    bbox: BBox | None = None
    last_round: int = -1
    events: deque[bytes] = field(default_factory=lambda: deque(maxlen=RIDE_EVENT_QUEUE))
    behind_since: float | None = None
    closing: bool = False

    def may_see(self, rider_id: str | None) -> bool:
        return self.sees_all_rides or (rider_id is not None and rider_id == self.sub)

    def subscribe(self, bbox: BBox) -> None:
        self.bbox = bbox
        self.last_round = -1  # next frame: every car in the new viewport

    def buffered(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0


def in_bbox(car: Car, bbox: BBox) -> bool:
    return bbox[0] <= car.lon <= bbox[2] and bbox[1] <= car.lat <= bbox[3]


def car_frame(round_no: int, now_ms: int, cars: bytes, events: bytes) -> bytes:
    return b'{"t":"f","k":%d,"ts":%d,"c":[%b],"e":[%b]}' % (round_no, now_ms, cars, events)


@dataclass
class HubCounters:
    events_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    collapsed: int = 0
    slow_closed: int = 0
    round_errors: int = 0
    newest_ping_ts: int = 0
    # recent ping-to-write latencies (ms), sampled per round, for benchmarks and the stats endpoint
    write_latency_ms: deque[int] = field(default_factory=lambda: deque(maxlen=4000))
