"""Offers and cancellations without a broker: the simulated drivers' answers (probability, busy
drivers, redeliveries, withdrawn offers, driver cancels), the offer statistics, and the
cancellation fee rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ridehail.domain.cancellation import DEFAULT_POLICY, cancellation_fee
from ridehail.domain.events import LatLon, RideCancelled, RideOfferAnswered
from ridehail.domain.roads import RoadGraph
from ridehail.matching.offers import OfferStats
from ridehail.simulator.drivers import AssignmentRejected, FleetConfig
from ridehail.simulator.fleet import Fleet

CANCEL_GRACE_S = DEFAULT_POLICY.grace_s
CANCELLATION_FEE = DEFAULT_POLICY.fee
PICKUP = LatLon(57.7000, 11.9700)
DROPOFF = LatLon(57.7100, 11.9900)


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.load()


def fleet(graph: RoadGraph, **overrides: object) -> Fleet:
    values: dict[str, object] = {"drivers": 50, "seed": 5, "mean_online_min": 0.0, "answer_delay_max_s": 1.0}
    values.update(overrides)
    return Fleet(graph, FleetConfig(**values))  # type: ignore[arg-type]


def answers_until(f: Fleet, until: float, start: float = 0.0) -> list[RideOfferAnswered]:
    out: list[RideOfferAnswered] = []
    now = start
    while now < until:
        now += f.tick_s
        out += [e for e in f.step(now, ts_ms=round(now * 1000)).events if isinstance(e, RideOfferAnswered)]
    return out


def test_pings_say_the_drivers_answer_offers(graph: RoadGraph) -> None:
    f = fleet(graph, drivers=3)
    pings = [p for _ in range(f.config.slots) for p in f.step(1.0).pings]
    assert pings and all(p.offers for p in pings)
    g = fleet(graph, drivers=3, answers_offers=False)
    assert not any(p.offers for _ in range(g.config.slots) for p in g.step(1.0).pings)


def test_each_offer_gets_one_answer_after_a_short_think_and_redelivery_changes_nothing(graph: RoadGraph) -> None:
    f = fleet(graph, accept_probability=1.0)
    driver = f.drivers[0].driver_id
    assert f.offer(driver, "r1", "offer-1", now=0.0) is True
    assert f.offer(driver, "r1", "offer-1", now=0.1) is False  # the same offer redelivered
    answers = answers_until(f, 3.0)
    assert len(answers) == 1
    a = answers[0]
    assert (a.ride_id, a.driver_id, a.offer_id, a.accepted) == ("r1", driver, "offer-1", True)
    assert 0.2 <= a.ts / 1000 <= 1.0 + 2 * f.tick_s  # answered after 0.2 s up to the maximum think
    with pytest.raises(AssignmentRejected, match="unknown driver"):
        f.offer("nobody", "r2", "offer-2", now=3.0)


def test_acceptance_follows_the_configured_probability(graph: RoadGraph) -> None:
    f = fleet(graph, drivers=400, accept_probability=0.7, seed=9)
    for i, d in enumerate(f.drivers):
        f.offer(d.driver_id, f"r{i}", f"o{i}", now=0.0)
    answers = answers_until(f, 2.0)
    assert len(answers) == 400
    rate = sum(a.accepted for a in answers) / 400
    assert 0.6 < rate < 0.8  # binomial(400, 0.7): 0.6..0.8 is beyond 4 standard deviations
    declined = [a for a in answers if not a.accepted]
    assert declined and all(a.reason == "driver declined" for a in declined)


def test_a_busy_driver_declines_at_once_and_withdrawn_offers_get_no_answer(graph: RoadGraph) -> None:
    f = fleet(graph, accept_probability=1.0)
    busy, other = f.drivers[0].driver_id, f.drivers[1].driver_id
    assert f.assign(busy, "ride-busy", PICKUP, DROPOFF, now=0.0)
    f.offer(busy, "r1", "o1", now=0.0)
    f.offer(other, "r2", "o2", now=0.0)
    f.offer(other, "r3", "o3", now=0.0)  # already considering r2: busy
    assert f.withdraw_offer("r2") is True  # timed out at matching: no answer goes out
    answers = {a.ride_id: a for a in answers_until(f, 2.0)}
    assert set(answers) == {"r1", "r3"}
    assert (answers["r1"].accepted, answers["r1"].reason) == (False, "driver is busy")
    assert (answers["r3"].accepted, answers["r3"].reason) == (False, "driver is busy")


def test_a_driver_may_cancel_on_the_way_and_is_free_again(graph: RoadGraph) -> None:
    f = fleet(graph, cancel_probability=1.0, cancel_after_s=(2.0, 3.0), pickup_wait_s=5.0)
    d = f.drivers[0]
    assert f.assign(d.driver_id, "ride-c", PICKUP, DROPOFF, now=0.0)
    cancels: list[RideCancelled] = []
    now = 0.0
    while now < 4.0:
        now += f.tick_s
        cancels += [e for e in f.step(now, ts_ms=round(now * 1000)).events if isinstance(e, RideCancelled)]
    assert len(cancels) == 1
    c = cancels[0]
    assert (c.ride_id, c.by, c.driver_id) == ("ride-c", "driver", d.driver_id)
    assert c.reason == "driver cancelled on the way to the pickup"
    assert d.ride is None and d.status.value == "available"
    assert f.cancel("ride-c", now) is None  # the echo of its own cancel changes nothing


def test_offer_stats_acceptance_rate_and_latency() -> None:
    s = OfferStats()
    assert s.snapshot()["acceptance_rate"] == 0.0 and s.snapshot()["answer_p50_ms"] is None
    for _ in range(4):
        s.sent()
    s.answered(True, 100)
    s.answered(False, 300)
    s.timed_out()
    s.ignored()
    snap = s.snapshot()
    assert (snap["sent"], snap["accepted"], snap["declined"], snap["timed_out"], snap["ignored"]) == (4, 1, 1, 1, 1)
    assert snap["acceptance_rate"] == pytest.approx(1 / 3, abs=0.001)  # timeouts count as not accepted
    assert snap["answer_p50_ms"] == 200.0


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@given(st.floats(min_value=0, max_value=24 * 3600), st.sampled_from(["requested", "offered", "assigned", "arrived"]))
def test_fee_only_for_riders_after_the_grace_period_or_the_drivers_arrival(elapsed: float, status: str) -> None:
    assigned_at = None if status in ("requested", "offered") else NOW - timedelta(seconds=elapsed)
    fee = cancellation_fee(status, "rider", assigned_at, NOW)
    expected = status == "arrived" or (status == "assigned" and elapsed > CANCEL_GRACE_S)
    assert fee == (CANCELLATION_FEE if expected else Decimal("0.00"))
    for by in ("driver", "system"):
        assert cancellation_fee(status, by, assigned_at, NOW) == Decimal("0.00")


@given(st.floats(min_value=0, max_value=3600), st.floats(min_value=0, max_value=3600))
def test_fee_is_monotone_in_waiting_time(a: float, b: float) -> None:
    early, late = sorted((a, b))
    fee_early = cancellation_fee("assigned", "rider", NOW - timedelta(seconds=early), NOW)
    fee_late = cancellation_fee("assigned", "rider", NOW - timedelta(seconds=late), NOW)
    assert fee_early <= fee_late
