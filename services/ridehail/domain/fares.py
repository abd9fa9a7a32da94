"""The tariff and the one fare function every service uses (quotes, simulator, matching).

Pure: the tariff's values come from the settings in :mod:`ridehail.common.tariff`.

A trip costs ``base + per_km * km + per_minute * minutes``, times the surge multiplier, and never
less than ``minimum``. Money is computed with :class:`decimal.Decimal` and rounded half-up to the
currency's minor unit, so the same inputs give the same fare in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Tariff:
    base: Decimal
    per_km: Decimal
    per_minute: Decimal
    minimum: Decimal
    currency: str = "SEK"


@dataclass(frozen=True, slots=True)
class Fare:
    """A priced trip: the total and how it was made up (all amounts in currency units)."""

    total: Decimal
    base: Decimal
    distance: Decimal
    time: Decimal
    surge_multiplier: float
    minimum_applied: bool
    currency: str
    distance_m: float
    duration_s: float

    def breakdown(self) -> dict[str, Any]:
        return {
            "total": float(self.total),
            "base": float(self.base),
            "distance": float(self.distance),
            "time": float(self.time),
            "surge_multiplier": self.surge_multiplier,
            "minimum_applied": self.minimum_applied,
            "currency": self.currency,
            "distance_m": self.distance_m,
            "duration_s": self.duration_s,
        }


def compute_fare(tariff: Tariff, distance_m: float, duration_s: float, surge_multiplier: float = 1.0) -> Fare:
    """The fare of a trip; raises ValueError for negative or non-finite inputs or a multiplier below 1."""
    for name, value in (("distance_m", distance_m), ("duration_s", duration_s)):
        if not (value >= 0.0 and value != float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0 (got {value!r})")
    if not (1.0 <= surge_multiplier < float("inf")):
        raise ValueError(f"surge_multiplier must be >= 1 (got {surge_multiplier!r})")
    base = tariff.base
    distance = (tariff.per_km * Decimal(repr(distance_m)) / 1000).quantize(CENT, ROUND_HALF_UP)
    time = (tariff.per_minute * Decimal(repr(duration_s)) / 60).quantize(CENT, ROUND_HALF_UP)
    surged = ((base + distance + time) * Decimal(repr(surge_multiplier))).quantize(CENT, ROUND_HALF_UP)
    minimum_applied = surged < tariff.minimum
    total = tariff.minimum.quantize(CENT, ROUND_HALF_UP) if minimum_applied else surged
    return Fare(
        total=total,
        base=base,
        distance=distance,
        time=time,
        surge_multiplier=surge_multiplier,
        minimum_applied=minimum_applied,
        currency=tariff.currency,
        distance_m=distance_m,
        duration_s=duration_s,
    )
