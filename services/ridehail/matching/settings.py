"""Matching service settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings


class MatchingSettings(CommonSettings):
    matching_mode: Literal["greedy", "batched"] = Field(
        default="greedy",
        description="Assignment mode: greedy (nearest driver at once) or batched (optimal per window).",
    )
    matching_batch_window_ms: int = Field(
        default=2000,
        ge=50,
        le=60_000,
        description="Batched mode: how often waiting requests are solved together; greedy mode: retry interval.",
    )
    matching_radius_m: float = Field(
        default=3000.0, gt=0, le=50_000, description="Only drivers within this distance of the pickup are candidates."
    )
    matching_request_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="A request with no driver after this long ends as expired."
    )
    matching_pickup_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        le=86_400,
        description="An assigned ride whose driver never reports arriving after this long is cancelled (by system).",
    )
    matching_eta_model: Literal["auto", "road_network", "straight_line"] = Field(
        default="auto", description="Pickup ETA: road graph (auto: if it loads) or straight line x detour / speed."
    )
    matching_refresh_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="How often assignments whose driver never reaches the pickup are looked for.",
    )
    matching_group_id: str = Field(
        default="ridehail-matching", description="Consumer group prefix (instances sharing it split the work)."
    )
    matching_session_timeout_ms: int = Field(
        default=4000,
        ge=3000,
        le=60_000,
        description="Consumer session timeout: a dead instance's partitions move to the others after this "
        "(plus a rebalance of about half of it). Apache Kafka refuses one below its "
        "group.min.session.timeout.ms (6000 by default; ridehail's local cluster and compose set 1000): "
        "against such a broker set 6000 or more.",
    )
    matching_location_batch_max: int = Field(
        default=50_000, ge=1, le=100_000, description="Location consumer: most pings per batch."
    )
    matching_location_batch_timeout_ms: int = Field(
        default=100, ge=1, le=10_000, description="Location consumer: longest wait to fill a batch."
    )
    matching_offers: bool = Field(
        default=True,
        description="Offer each ride to one driver at a time (drivers whose pings say they answer offers); "
        "drivers that do not are assigned directly.",
    )
    matching_offer_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="An offer not answered within this many seconds moves to the next driver.",
    )
    matching_offer_check_ms: int = Field(
        default=250,
        ge=10,
        le=10_000,
        description="How often open offers are checked for silent drivers and for time-outs of other instances' "
        "offers (this instance's own offers time out at their deadline).",
    )
    matching_offer_max_tries: int = Field(
        default=5, ge=1, le=100, description="After this many declined or unanswered offers the ride expires."
    )
    matching_ride_batch_timeout_ms: int = Field(
        default=2, ge=1, le=10_000, description="Ride consumer: longest wait to fill a batch (adds to latency)."
    )
