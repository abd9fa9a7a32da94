"""Property-based fuzzing of every consumer handler against the real things it writes (Postgres,
the fleet, the surge book, the hub): batches of arbitrary ride events and pings, bytes through
the consumer's decoder or events built in Python that skip the decoder's bounds (a value a future
bug lets through). The property: a handler never raises while its database is up; what it cannot
apply it returns as rejected; and a good event in the next batch is still applied (nothing poisoned).
Examples are bounded (the test command stays fast)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ridehail.common.batch_consumer import Decoded
from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.domain import events as ev
from ridehail.domain.roads import RoadGraph
from ridehail.domain.surge import SurgeBook
from ridehail.domain.topics import DRIVER_LOCATION, REPLAY_HEADER, RIDE_EVENT, RIDE_REQUEST
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub
from ridehail.matching.engine import MatchingEngine
from ridehail.matching.eta import StraightLineEta
from ridehail.matching.main import RIDE_EVENT_TYPES
from ridehail.matching.settings import MatchingSettings
from ridehail.pricing.service import SurgeHandler
from ridehail.simulator.drivers import FleetConfig
from ridehail.simulator.fleet import Fleet
from ridehail.simulator.runtime import FleetRunner, RideEventHandler

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RIDES = [f"fz-r{i}" for i in range(4)]
PREFIX = "fz-"
DRIVERS = [f"{PREFIX}{i + 1:05d}" for i in range(3)] + ["other-d1"]

ids = st.sampled_from(RIDES) | st.sampled_from(RIDES) | st.text(min_size=1, max_size=70)
_driver_ids = st.sampled_from(DRIVERS) | st.text(min_size=1, max_size=70)
points = st.builds(
    ev.LatLon,
    st.floats(57.60, 57.80) | st.floats(-1e300, 1e300, allow_nan=False),
    st.floats(11.80, 12.10) | st.floats(-1e300, 1e300, allow_nan=False),
)
numbers = st.floats(0, 1e5) | st.floats(-1e300, 1e300, allow_nan=False) | st.integers(-(2**70), 2**70)
small_ints = st.integers(0, 10) | st.integers(-(2**70), 2**70)
texts = st.text(max_size=20) | st.text(max_size=1000)


def _kw(draw: st.DrawFn, **fields: st.SearchStrategy[Any]) -> dict[str, Any]:
    return {k: draw(s) for k, s in fields.items()}


@st.composite
def any_event(draw: st.DrawFn) -> ev.Event:
    """An event of any type, with fields anywhere from plausible to absurd (bounds not applied)."""
    cls = draw(st.sampled_from(ev.ALL_EVENT_TYPES))
    ts = draw(st.just(ev.now_ms()) | small_ints)
    common = {"ts": ts}
    if cls is ev.DriverLocation:
        return ev.DriverLocation(
            **common,
            **_kw(draw, driver_id=_driver_ids, seq=small_ints, lat=st.floats(57.6, 57.8), lon=st.floats(11.8, 12.1)),
            status=draw(st.sampled_from(["available", "to_pickup", "on_trip", "offline"])),
        )
    if cls is ev.SurgeChanged:
        return ev.SurgeChanged(**common, **_kw(draw, cell=texts, resolution=small_ints, multiplier=numbers))
    # Mostly a ride of the pool with its own driver (so lifecycle events reach deep into the
    # handlers: fares, releases, recorded decisions), sometimes anything.
    pair = draw(st.integers(0, len(RIDES) - 1))
    coherent = draw(st.integers(0, 3)) > 0
    ride = {"ride_id": RIDES[pair] if coherent else draw(ids), "rider_id": draw(st.none() | st.just("fz-u") | ids)}
    driver_ids = st.just(DRIVERS[pair % 3]) if coherent else _driver_ids
    if cls is ev.RideRequested:
        return ev.RideRequested(
            **common, ride_id=ride["ride_id"], rider_id=draw(ids), pickup=draw(points), dropoff=draw(points)
        )
    if cls is ev.RideOffered:
        return ev.RideOffered(
            **common, **ride, driver_id=draw(driver_ids), pickup=draw(points), dropoff=draw(points),
            eta_s=draw(numbers), attempt=draw(small_ints), expires_ts=draw(small_ints),
        )  # fmt: skip
    if cls is ev.RideAssigned:
        return ev.RideAssigned(
            **common, **ride, driver_id=draw(driver_ids), pickup=draw(points), dropoff=draw(points),
            eta_s=draw(numbers), surge_multiplier=draw(st.none() | numbers),
        )  # fmt: skip
    if cls is ev.RideOfferAnswered:
        return ev.RideOfferAnswered(
            **common, ride_id=ride["ride_id"], driver_id=draw(driver_ids), offer_id=draw(ids),
            accepted=draw(st.booleans()), reason=draw(texts),
        )  # fmt: skip
    if cls is ev.RideOfferTimedOut:
        return ev.RideOfferTimedOut(
            **common, ride_id=ride["ride_id"], driver_id=draw(driver_ids), offer_id=draw(ids), attempt=draw(small_ints)
        )
    if cls is ev.RideCompleted:
        return ev.RideCompleted(
            **common, **ride, driver_id=draw(driver_ids), distance_m=draw(numbers), duration_s=draw(numbers),
            fare=draw(st.none() | numbers), surge_multiplier=draw(st.none() | numbers),
        )  # fmt: skip
    if cls is ev.RideCancelled:
        return ev.RideCancelled(
            **common, **ride, by=draw(st.sampled_from(["rider", "driver", "system"])), reason=draw(texts),
            driver_id=draw(st.none() | driver_ids),
        )  # fmt: skip
    if cls is ev.RideExpired:
        return ev.RideExpired(**common, **ride, reason=draw(texts))
    return cls(**common, **ride, driver_id=draw(driver_ids))  # arrived, picked up


def _message(topic: str, event: ev.Event, offset: int, replayed: bool) -> Message:
    headers = [(REPLAY_HEADER, b"1")] if replayed else None
    return Message(topic=topic, partition=0, offset=offset, value=ev.encode(event), headers=headers)


def batch_of(
    drawn: list[tuple[ev.Event, bool, bool]], topic: str, decoder: ev.EventDecoder | None = None
) -> list[Decoded]:
    """``(event, through_decoder, replayed)`` -> what the consumer hands its handler: through the
    decoder, only what decodes; otherwise the Python-built event as is (bounds skipped)."""
    out = []
    for i, (event, through_decoder, replayed) in enumerate(drawn):
        msg = _message(topic, event, i, replayed)
        if through_decoder and decoder is not None:
            try:
                event = decoder.decode(msg.value())
            except ev.EventError:
                continue
        out.append(Decoded(event, msg))
    return out


batches = st.lists(st.tuples(any_event(), st.booleans(), st.booleans()), min_size=1, max_size=6)


# -- matching --------------------------------------------------------------------------------------


@pytest.fixture
async def matching_engine(database_url: str) -> AsyncIterator[MatchingEngine]:
    settings_ = MatchingSettings(database_url=database_url, matching_eta_model="straight_line")
    db = make_engine(database_url)
    yield MatchingEngine(settings_, make_sessionmaker(db), StraightLineEta())
    await db.dispose()


STATUSES = ["requested", "offered", "assigned", "arrived", "in_progress", "completed", "cancelled", "expired"]
ACTIVE = ["assigned", "arrived", "in_progress"]  # drawn more often: where most events have an effect
ride_states = st.lists(
    st.tuples(st.sampled_from(STATUSES) | st.sampled_from(ACTIVE), st.booleans()),
    min_size=len(RIDES),
    max_size=len(RIDES),
)
ABSURD_FARE = [(ev.RideCompleted(ride_id=RIDES[0], driver_id=DRIVERS[0], fare=1e300), False, False)]


async def set_rides(pg: asyncpg.Connection, states: list[tuple[str, bool]]) -> None:
    """The pool's rides in the drawn states (status, replayed), each with one of the pool's drivers."""
    await pg.execute("DELETE FROM ride_events WHERE ride_id = ANY($1)", RIDES)
    await pg.execute("DELETE FROM rides WHERE ride_id = ANY($1)", RIDES)
    for i, (ride_id, (status, replayed)) in enumerate(zip(RIDES, states, strict=True)):
        driver = DRIVERS[i % 3] if status not in ("requested", "expired") else None
        await pg.execute(
            "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, "
            "driver_id, replayed, offer_id) VALUES ($1, 'fz-u', $2, 57.70, 11.97, 57.71, 11.99, $3, $4, $5)",
            ride_id, status, driver, replayed, "fz-r0" if status == "offered" else None,
        )  # fmt: skip


@FUZZ
@given(drawn=batches, states=ride_states)
@example(drawn=ABSURD_FARE, states=[("in_progress", False)] * len(RIDES))
async def test_matching_ride_handler_takes_any_batch(
    matching_engine: MatchingEngine,
    pg: asyncpg.Connection,
    drawn: list[tuple[ev.Event, bool, bool]],
    states: list[tuple[str, bool]],
) -> None:
    await set_rides(pg, states)
    batch = batch_of(drawn, RIDE_EVENT.name, ev.EventDecoder(*RIDE_EVENT_TYPES))
    rejected = await asyncio.wait_for(matching_engine.handle_rides(batch), 30)
    assert {id(r.message) for r in rejected} <= {id(d.message) for d in batch}
    # not poisoned: a good request in the next batch is stored
    good = ev.RideRequested(
        ride_id=uuid.uuid4().hex, rider_id="fz-u", pickup=ev.LatLon(57.70, 11.97), dropoff=ev.LatLon(57.71, 11.99)
    )
    assert await matching_engine.handle_rides(batch_of([(good, True, False)], RIDE_REQUEST.name)) == []
    assert await pg.fetchval("SELECT count(*) FROM rides WHERE ride_id = $1", good.ride_id) == 1


@FUZZ
@given(drawn=batches)
async def test_matching_location_handler_takes_any_batch(
    matching_engine: MatchingEngine, pg: asyncpg.Connection, drawn: list[tuple[ev.Event, bool, bool]]
) -> None:
    batch = batch_of(drawn, DRIVER_LOCATION.name, ev.EventDecoder(ev.DriverLocation))
    try:
        rejected = await asyncio.wait_for(matching_engine.handle_locations(batch), 30)
    except Exception as exc:  # the batch handler may raise: then the consumer isolates the event
        from ridehail.common.failures import is_infrastructure_failure

        assert not is_infrastructure_failure(exc)
        for item in batch:  # what the consumer does: one at a time, each applied or rejected
            try:
                await matching_engine.handle_locations([item])
            except Exception as one:
                assert not is_infrastructure_failure(one)
        rejected = []
    assert {id(r.message) for r in rejected} <= {id(d.message) for d in batch}
    driver = f"fz-good-{uuid.uuid4().hex[:8]}"
    good = ev.DriverLocation(driver_id=driver, seq=1, lat=57.70, lon=11.97)
    assert await matching_engine.handle_locations(batch_of([(good, True, False)], DRIVER_LOCATION.name)) == []
    assert await pg.fetchval("SELECT count(*) FROM drivers WHERE driver_id = $1", driver) == 1


# -- the simulator, pricing and the gateway's feed -------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.load()


@pytest.fixture
def simulator_handler(broker: str, graph: RoadGraph) -> Iterator[RideEventHandler]:
    fleet = Fleet(graph, FleetConfig(drivers=3, seed=4, prefix=PREFIX, mean_online_min=0.0))
    producer = EventProducer(broker, "fuzz-sim")
    yield RideEventHandler(fleet, FleetRunner(fleet, producer, time_scale=10.0))
    producer.close(5)


@FUZZ
@given(drawn=batches)
async def test_simulator_ride_handler_takes_any_batch(
    simulator_handler: RideEventHandler, drawn: list[tuple[ev.Event, bool, bool]]
) -> None:
    batch = batch_of(drawn, RIDE_EVENT.name, ev.EventDecoder(*RIDE_EVENT.events))
    rejected = await simulator_handler(batch)
    assert {id(r.message) for r in rejected} <= {id(d.message) for d in batch}
    simulator_handler.fleet.step(simulator_handler.clock.now())  # the fleet still steps


@FUZZ
@given(drawn=batches)
async def test_pricing_handler_takes_any_batch(drawn: list[tuple[ev.Event, bool, bool]]) -> None:
    handler = SurgeHandler(SurgeBook())
    batch = batch_of(drawn, DRIVER_LOCATION.name, ev.EventDecoder(ev.DriverLocation, ev.RideRequested))
    rejected = await handler(batch)
    assert {id(r.message) for r in rejected} <= {id(d.message) for d in batch}
    handler.book.recompute(ev.now_ms())


@FUZZ
@given(drawn=batches)
def test_gateway_feed_takes_any_batch(drawn: list[tuple[ev.Event, bool, bool]]) -> None:
    hub = Hub()
    feed = LiveFeed("127.0.0.1:9", hub)
    topics = {ev.DriverLocation: DRIVER_LOCATION.name, ev.SurgeChanged: "ridehail.pricing.surge.v1"}
    messages = [_message(topics.get(type(e), RIDE_EVENT.name), e, i, r) for i, (e, _, r) in enumerate(drawn)]
    feed.handle(messages)
    hub.frame_round()
    assert hub.counters.round_errors == 0
    assert hub.surge_resolution == 8
