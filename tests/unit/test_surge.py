"""Property tests of the surge computation: monotone, clamped, order-independent, change-only."""

from __future__ import annotations

import random

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.surge import SurgeBook, SurgePolicy, quantise, target_multiplier

A = SERVICE_AREA
POLICY = SurgePolicy()
counts = st.integers(0, 500)
policies = st.builds(
    SurgePolicy,
    cap=st.floats(1.0, 5.0),
    threshold=st.floats(0.0, 5.0),
    sensitivity=st.floats(0.01, 5.0),
    smoothing=st.floats(0.05, 1.0),
)


@given(policies, counts, counts, st.integers(0, 100))
def test_target_is_monotone_in_demand(policy: SurgePolicy, demand: int, supply: int, more: int) -> None:
    assert target_multiplier(demand + more, supply, policy) >= target_multiplier(demand, supply, policy)


@given(policies, counts, counts, st.integers(0, 100))
def test_target_is_monotone_in_scarcity(policy: SurgePolicy, demand: int, supply: int, fewer: int) -> None:
    scarce = max(0, supply - fewer)
    assert target_multiplier(demand, scarce, policy) >= target_multiplier(demand, supply, policy)


@given(policies, counts, counts)
def test_target_is_clamped(policy: SurgePolicy, demand: int, supply: int) -> None:
    assert 1.0 <= target_multiplier(demand, supply, policy) <= policy.cap


def test_no_demand_no_surge_and_scarcity_surges_to_the_cap() -> None:
    assert target_multiplier(0, 0, POLICY) == 1.0
    assert target_multiplier(2, 10, POLICY) == 1.0
    assert target_multiplier(10, 1, POLICY) > 1.0
    assert target_multiplier(10_000, 0, POLICY) == POLICY.cap


@given(st.floats(0.5, 20.0), st.floats(1.0, 5.0))
def test_quantise_stays_in_range_and_on_the_grid(value: float, cap: float) -> None:
    q = quantise(value, 0.1, cap)
    assert 1.0 <= q <= round(cap, 2)
    assert abs(q * 10 - round(q * 10)) < 1e-9 or q == round(cap, 2)


def _point(rng: random.Random) -> tuple[float, float]:
    return rng.uniform(A.min_lat, A.max_lat), rng.uniform(A.min_lon, A.max_lon)


def _events(seed: int, n_drivers: int, n_requests: int, now: int) -> list[tuple]:
    rng = random.Random(seed)
    events: list[tuple] = []
    hot = _point(rng)
    for d in range(n_drivers):
        for seq in range(1, rng.randint(1, 4) + 1):
            lat, lon = _point(rng)
            events.append(("loc", f"d{d}", seq, now - rng.randint(0, 250_000), lat, lon, rng.random() < 0.7))
    for r in range(n_requests):
        lat, lon = hot if rng.random() < 0.6 else _point(rng)
        events.append(("req", f"r{r}", now - rng.randint(0, 250_000), lat, lon))
    return events


def _feed(book: SurgeBook, events: list[tuple]) -> None:
    for e in events:
        if e[0] == "loc":
            book.add_location(e[1], e[2], e[3], e[4], e[5], e[6])
        else:
            book.add_request(e[1], e[2], e[3], e[4])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 60), st.integers(0, 80), st.randoms(use_true_random=False))
def test_result_is_stable_under_reordering_within_a_window(
    seed: int, n_drivers: int, n_requests: int, shuffler: random.Random
) -> None:
    now = 1_700_000_000_000
    events = _events(seed, n_drivers, n_requests, now)
    shuffled = list(events)
    shuffler.shuffle(shuffled)
    a, b = SurgeBook(), SurgeBook()
    _feed(a, events)
    _feed(b, shuffled)
    assert a.counts(now) == b.counts(now)
    changes_a = a.recompute(now)
    changes_b = b.recompute(now)
    assert sorted(changes_a, key=lambda c: c.cell) == sorted(changes_b, key=lambda c: c.cell)
    assert a.snapshot() == b.snapshot()


def test_only_the_newest_ping_of_a_driver_counts() -> None:
    book = SurgeBook()
    now = 1_000_000
    book.add_location("d1", 5, now - 1000, 57.70, 11.97, available=False)
    book.add_location("d1", 3, now - 500, 57.70, 11.97, available=True)  # older seq, later arrival
    assert book.counts(now) == {}


def test_events_outside_the_window_are_forgotten() -> None:
    book = SurgeBook(policy=SurgePolicy(window_s=60))
    now = 10_000_000
    book.add_request("old", now - 61_000, 57.70, 11.97)
    book.add_request("new", now - 1_000, 57.70, 11.97)
    cell = h3.latlng_to_cell(57.70, 11.97, book.resolution)
    assert book.counts(now) == {cell: (1, 0)}
    assert "old" not in book.requests


def _hot_book(requests: int, drivers: int, policy: SurgePolicy = POLICY) -> tuple[SurgeBook, str, int]:
    book = SurgeBook(policy=policy)
    now = 50_000_000
    for i in range(requests):
        book.add_request(f"r{i}", now - 1000, 57.7000 + i * 1e-6, 11.9700)
    for i in range(drivers):
        book.add_location(f"d{i}", 1, now - 1000, 57.7000, 11.9700 + i * 1e-6, available=True)
    return book, h3.latlng_to_cell(57.70, 11.97, book.resolution), now


def test_changes_are_emitted_only_when_the_published_multiplier_changes() -> None:
    book, cell, now = _hot_book(requests=12, drivers=2)
    seen: list[float] = []
    for tick in range(40):
        changes = book.recompute(now + tick * 1000)
        assert all(c.multiplier != c.previous for c in changes)
        seen += [c.multiplier for c in changes if c.cell == cell]
    target = quantise(target_multiplier(12, 2, POLICY), POLICY.step, POLICY.cap)
    assert seen, "a hot cell never surged"
    assert seen[-1] == target
    assert seen == sorted(seen), "smoothing approaches the target monotonically, without flicker"
    assert book.recompute(now + 41_000) == []  # steady state: nothing to say


def test_smoothing_spreads_a_jump_over_several_ticks_and_decays_back_to_one() -> None:
    book, cell, now = _hot_book(requests=40, drivers=0)
    first = book.recompute(now)
    assert first and first[0].multiplier < POLICY.cap
    for tick in range(1, 40):
        book.recompute(now + tick * 1000)
    assert book.multiplier(cell) == POLICY.cap
    later = now + int(POLICY.window_s * 1000) + 5000  # every request has left the window
    values = []
    for tick in range(40):
        values += [c.multiplier for c in book.recompute(later + tick * 1000)]
    assert values and values[-1] == 1.0
    assert values == sorted(values, reverse=True)
    assert book.multiplier(cell) == 1.0


def test_restore_keeps_published_values() -> None:
    book = SurgeBook()
    book.restore({"881f1d4815fffff": 1.7, "881f1d4817fffff": 1.0})
    assert book.snapshot() == {"881f1d4815fffff": 1.7}


@pytest.mark.parametrize("bad", [{"cap": 0.5}, {"smoothing": 0.0}, {"step": 0.0}, {"hysteresis": 2.0}])
def test_invalid_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SurgePolicy(**bad)


def test_an_event_stamped_in_the_future_leaves_the_window_by_its_arrival() -> None:
    """A ts far ahead of the clock (a skewed or hostile producer) would otherwise be held, and
    counted, until the clock catches up: forever for ts in the year 2100."""
    from ridehail.common.batch_consumer import Decoded
    from ridehail.domain.events import MAX_TS_MS, DriverLocation, LatLon, RideRequested, now_ms
    from ridehail.pricing.service import SurgeHandler

    book = SurgeBook(policy=SurgePolicy(window_s=60))
    handler = SurgeHandler(book)
    here = LatLon(57.70, 11.97)
    future = [
        RideRequested(ride_id="future", rider_id="u", pickup=here, dropoff=LatLon(57.71, 11.99), ts=MAX_TS_MS),
        DriverLocation(driver_id="d-future", seq=1, lat=here.lat, lon=here.lon, ts=MAX_TS_MS),
    ]
    arrived = now_ms()
    handler.apply(future)
    cell = h3.latlng_to_cell(here.lat, here.lon, book.resolution)
    assert book.counts(arrived + 1_000) == {cell: (1, 1)}  # counted now, as it arrived
    assert book.counts(arrived + 61_000 + 5_000) == {}  # and gone one window later
    assert not book.requests and not book.drivers

    class _Msg:
        def value(self) -> bytes:
            return b""

    crashing = Decoded(RideRequested(ride_id="x", rider_id="u", pickup=here, dropoff=here), _Msg())  # type: ignore[arg-type]
    book.add_request = None  # type: ignore[assignment,method-assign]  # any exception while applying
    import asyncio

    rejected = asyncio.run(handler([crashing]))
    assert len(rejected) == 1 and "could not be applied" in rejected[0].reason
