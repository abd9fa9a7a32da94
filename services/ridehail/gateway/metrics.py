"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIENTS = Gauge("ridehail_gateway_ws_clients", "Connected websocket clients")
FRAMES_SENT = Counter("ridehail_gateway_frames_sent_total", "Car/event frames written to websocket clients")
FRAME_BYTES = Counter("ridehail_gateway_frame_bytes_total", "Bytes of frames written to websocket clients")
FRAMES_COLLAPSED = Counter(
    "ridehail_gateway_frames_collapsed_total",
    "Frames not written because the client was behind (its cars collapse to the latest state)",
)
RIDE_EVENTS_DROPPED = Counter(
    "ridehail_gateway_ride_events_dropped_total", "Ride events dropped from a full per-client queue"
)
SLOW_CLIENTS_CLOSED = Counter("ridehail_gateway_slow_clients_closed_total", "Clients closed for staying behind")
CLIENT_ERRORS = Counter("ridehail_gateway_client_errors_total", "Error frames sent to clients", ["code"])
AUTH_REFUSED = Counter("ridehail_gateway_auth_refused_total", "Websocket connections refused", ["reason"])
EVENTS_IN = Counter("ridehail_gateway_events_in_total", "Events consumed by the live feed", ["type"])
BAD_EVENTS = Counter("ridehail_gateway_bad_events_total", "Messages the live feed could not decode")
FEED_LAG = Gauge("ridehail_gateway_consumer_lag", "Messages the gateway's live feed is behind")
MATCHING_LAG = Gauge("ridehail_gateway_matching_consumer_lag", "Matching service consumer lag (polled)")
CARS = Gauge("ridehail_gateway_cars", "Cars the gateway knows (heard from within car_ttl_s)")
E2E_LATENCY = Histogram(
    "ridehail_gateway_e2e_latency_seconds",
    "Ping creation (event ts) to the first websocket write of that ping (sampled per frame round)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FRAME_ROUND_SECONDS = Histogram(
    "ridehail_gateway_frame_round_seconds",
    "CPU time of one frame round (encode + filter + write for every client)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
