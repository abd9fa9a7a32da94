"""Simulator service settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings


class SimulatorSettings(CommonSettings):
    # -- fleet ------------------------------------------------------------------------------------
    drivers: int = Field(
        default=200, ge=0, le=200_000, description="Number of simulated drivers (`ridehail up --drivers N`)."
    )
    interval: float = Field(
        default=1.0, gt=0.0, le=60.0, description="Seconds between two location pings of one driver."
    )
    seed: int | None = Field(
        default=None, description="Random seed: the same seed replays the same fleet movements. Unset: random."
    )
    driver_prefix: str = Field(
        default="drv-",
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Driver id prefix: drivers are <prefix>00001, <prefix>00002, ...",
    )
    ping_slots: int = Field(
        default=5,
        ge=1,
        le=100,
        description="The fleet pings in this many groups per interval (one producer burst each): fewer, bigger "
        "bursts cost the embedded broker less (docs/performance.md); more spread the load.",
    )
    gps_noise_m: float = Field(
        default=0.0, ge=0.0, le=100.0, description="Standard deviation of GPS noise added to pings, metres."
    )
    pickup_wait_s: float = Field(
        default=5.0, ge=0.0, le=600.0, description="Seconds a driver waits at the pickup before `picked_up`."
    )
    mean_online_min: float = Field(
        default=45.0,
        ge=0.0,
        description="Mean minutes an idle driver stays online before going offline (0: drivers never go offline).",
    )
    mean_offline_min: float = Field(
        default=5.0, gt=0.0, description="Mean minutes a driver stays offline before coming back."
    )
    max_snap_m: float = Field(
        default=500.0,
        gt=0.0,
        description="Assignments whose pickup or drop-off lies farther than this from a road are rejected.",
    )
    driver_answers_offers: bool = Field(
        default=True,
        description="Drivers answer ride offers (accept or decline); off: matching assigns them directly.",
    )
    offer_accept_probability: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Probability that a free driver accepts a ride offer."
    )
    offer_answer_max_s: float = Field(
        default=1.5, ge=0.0, le=600.0, description="Drivers answer an offer after 0.2 s up to this many seconds."
    )
    simulator_ride_fetch_wait_ms: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="How long the broker may hold the simulator's fetch of ride events (offers). The embedded "
        "broker holds every fetch this long, data or not: a longer wait is fewer fetches, and an offer reaches its "
        "driver up to that much later (no effect on the broker's CPU was measured: docs/performance.md).",
    )
    driver_cancel_probability: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Probability that a driver cancels an accepted ride on the way to the pickup (10-60 s later).",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0.0,
        le=100.0,
        description="Simulated seconds per real second (>1 speeds up trips; pings stay every INTERVAL simulated s).",
    )
    road_graph: Path | None = Field(
        default=None, description="Road graph npz to drive on (unset: the bundled data/gothenburg.graph.npz)."
    )

    # -- transport --------------------------------------------------------------------------------
    simulator_transport: Literal["kafka", "rest", "rest-kafka"] = Field(
        default="kafka",
        description="How pings leave: kafka (produce to the broker) or rest / rest-kafka (POST to the ingest edge).",
    )
    simulator_driver_tokens_file: str | None = Field(
        default=None,
        description="REST transports: JSON file {driver_id: access token}; the ingest edge takes a driver's "
        "pings only with that driver's token (unset: pings go without one and are refused with 401).",
    )
    simulator_ingest_url: str | None = Field(
        default=None,
        pattern=r"^http://",
        description="REST transports: ping endpoint (unset: http://HOST:8005/ingest/ping, the ingest edge).",
    )
    simulator_http_connections: int = Field(
        default=64, ge=1, le=4096, description="REST transports: keep-alive connections (pings in flight at most)."
    )
    simulator_retry_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="REST transports: retry a ping on 503/429/connection errors until it is this many seconds old.",
    )

    # -- riders -----------------------------------------------------------------------------------
    riders_per_min: float = Field(
        default=0.0, ge=0.0, le=60_000.0, description="Simulated ride requests per minute (Poisson; 0: off)."
    )
    rider_accounts: int = Field(
        default=20, ge=1, le=10_000, description="Number of rider accounts the rider simulator uses."
    )
    rider_patience_s: float = Field(
        default=120.0,
        gt=0.0,
        description="A simulated rider cancels a ride still waiting for a driver after this many seconds.",
    )
    rider_password: str = Field(
        default="sim-rider-password-2024",
        min_length=8,
        description="Password of the simulated rider accounts (local demo accounts only).",
    )

    @property
    def ingest_url(self) -> str:
        return self.simulator_ingest_url or f"http://{self.host}:8005/ingest/ping"
