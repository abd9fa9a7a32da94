"""Fare function: monotone in distance and time, surge scales it, the minimum holds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ridehail.common.tariff import TariffSettings, tariff_from_settings
from ridehail.domain.fares import Tariff, compute_fare

TARIFF = Tariff(Decimal("25"), Decimal("11"), Decimal("3.5"), Decimal("55"), "SEK")
distances = st.floats(0, 200_000, allow_nan=False)
durations = st.floats(0, 20_000, allow_nan=False)
multipliers = st.floats(1.0, 5.0)


@given(distances, durations, st.floats(0, 50_000), multipliers)
def test_fare_is_monotone_in_distance(d: float, t: float, more: float, m: float) -> None:
    assert compute_fare(TARIFF, d + more, t, m).total >= compute_fare(TARIFF, d, t, m).total


@given(distances, durations, st.floats(0, 5_000), multipliers)
def test_fare_is_monotone_in_time(d: float, t: float, more: float, m: float) -> None:
    assert compute_fare(TARIFF, d, t + more, m).total >= compute_fare(TARIFF, d, t, m).total


@given(distances, durations, multipliers, st.floats(0, 2.0))
def test_fare_is_monotone_in_surge_and_never_below_minimum(d: float, t: float, m: float, more: float) -> None:
    low, high = compute_fare(TARIFF, d, t, m), compute_fare(TARIFF, d, t, m + more)
    assert high.total >= low.total >= TARIFF.minimum
    assert low.total == low.total.quantize(Decimal("0.01"))


def test_a_known_trip() -> None:
    fare = compute_fare(TARIFF, 10_000, 1_200, 1.5)  # 25 + 110 + 70 = 205, x1.5
    assert fare.total == Decimal("307.50")
    assert (fare.base, fare.distance, fare.time) == (Decimal("25"), Decimal("110.00"), Decimal("70.00"))
    assert not fare.minimum_applied
    short = compute_fare(TARIFF, 300, 60)
    assert short.total == Decimal("55.00") and short.minimum_applied
    assert fare.breakdown()["total"] == 307.5


BAD = [(-1, 0, 1), (0, -1, 1), (float("nan"), 0, 1), (0, 0, 0.9), (float("inf"), 0, 1)]


@pytest.mark.parametrize(("d", "t", "m"), BAD)
def test_bad_inputs_are_refused(d: float, t: float, m: float) -> None:
    with pytest.raises(ValueError):
        compute_fare(TARIFF, d, t, m)


def test_tariff_from_settings() -> None:
    s = TariffSettings(fare_base=10, fare_per_km=2, fare_per_minute=1, fare_minimum=0, fare_currency="EUR")
    assert tariff_from_settings(s) == Tariff(Decimal("10.0"), Decimal("2.0"), Decimal("1.0"), Decimal("0.0"), "EUR")
