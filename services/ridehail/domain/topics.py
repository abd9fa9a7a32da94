"""The topic contract: every ridehail topic, its key, its partitions and the events it carries.

Consumers build their decoders from these tuples (``RIDE_EVENT.events``, ``RIDE_FACTS``...) instead
of listing event types themselves, so a new event type is added in one place.

Offers (negotiation) and lifecycle facts share ``ridehail.ride.event.v1`` on purpose: both are
keyed by ``ride_id``, and one topic gives each ride one total order (offer, answer, assignment,
arrival, ...). Kafka orders records only within a partition; split over two topics, a replay or
a consumer could apply an assignment before the offer it answers. Consumers that only want facts
skip negotiation events by type (:data:`RIDE_NEGOTIATION`), without dead-lettering them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ridehail.domain.events import (
    DriverLocation,
    Event,
    RideArrived,
    RideAssigned,
    RideCancelled,
    RideCompleted,
    RideExpired,
    RideOfferAnswered,
    RideOffered,
    RideOfferTimedOut,
    RidePickedUp,
    RideRequested,
    SurgeChanged,
)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    description: str
    events: tuple[type[Event], ...] = ()

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


# Negotiation between matching and one driver about one ride: offers, answers, withdrawn offers.
RIDE_NEGOTIATION: tuple[type[Event], ...] = (RideOffered, RideOfferAnswered, RideOfferTimedOut)
# What happened to a ride (the facts every consumer may act on).
RIDE_FACTS: tuple[type[Event], ...] = (
    RideAssigned,
    RideArrived,
    RidePickedUp,
    RideCompleted,
    RideCancelled,
    RideExpired,
)

DRIVER_LOCATION = TopicSpec(
    "ridehail.driver.location.v1", 12, "driver_id", "GPS pings from drivers, every ~1 s each", (DriverLocation,)
)
RIDE_REQUEST = TopicSpec("ridehail.ride.request.v1", 6, "ride_id", "Ride requests from riders", (RideRequested,))
RIDE_EVENT = TopicSpec(
    "ridehail.ride.event.v1",
    6,
    "ride_id",
    "Ride lifecycle: offers and answers, assigned, arrived, picked_up, completed, cancelled, expired",
    RIDE_NEGOTIATION + RIDE_FACTS,
)
PRICING_SURGE = TopicSpec(
    "ridehail.pricing.surge.v1",
    3,
    "cell",
    "Surge multiplier changes per H3 cell (only when a cell's multiplier changes)",
    (SurgeChanged,),
)

# Header on every record put back by `ridehail replay`; the map says "replay" when it sees it.
REPLAY_HEADER = "ridehail-replay"

TOPICS: tuple[TopicSpec, ...] = (DRIVER_LOCATION, RIDE_REQUEST, RIDE_EVENT, PRICING_SURGE)


def all_topic_specs() -> list[TopicSpec]:
    """Every topic including its dead-letter topic (DLQs get one partition: order is not needed)."""
    specs: list[TopicSpec] = []
    for t in TOPICS:
        specs.append(t)
        specs.append(TopicSpec(t.dlq, 1, t.key, f"Dead letters of {t.name}"))
    return specs
