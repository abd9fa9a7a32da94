"""The tariff and the cancellation policy from the environment (``RIDEHAIL_FARE_*``,
``RIDEHAIL_CANCEL_*``), read once per process; the rules themselves live in the domain package
(:mod:`ridehail.domain.fares`, :mod:`ridehail.domain.cancellation`)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field

from ridehail.common.settings import CommonSettings
from ridehail.domain.cancellation import CancellationPolicy
from ridehail.domain.fares import Tariff


class TariffSettings(CommonSettings):
    """The tariff (read by the gateway for quotes and by the simulator for final fares)."""

    fare_base: float = Field(default=25.0, ge=0, le=10_000, description="Fare: fixed start price per trip.")
    fare_per_km: float = Field(default=11.0, ge=0, le=1_000, description="Fare: price per driven kilometre.")
    fare_per_minute: float = Field(default=3.5, ge=0, le=1_000, description="Fare: price per minute of trip.")
    fare_minimum: float = Field(default=55.0, ge=0, le=10_000, description="Fare: lowest price of any trip.")
    fare_quote_ttl_s: float = Field(
        default=120.0, gt=0, le=86_400, description="How long a quote's price can be locked by a ride request."
    )
    fare_currency: str = Field(
        default="SEK", min_length=3, max_length=3, pattern="^[A-Z]{3}$", description="Fare: ISO 4217 currency."
    )
    cancel_grace_s: float = Field(
        default=120.0,
        ge=0,
        le=86_400,
        description="Seconds after assignment during which a rider cancels for free (before the driver arrives).",
    )
    cancel_fee: float = Field(
        default=40.0, ge=0, le=10_000, description="Fee a rider pays for cancelling after the grace period."
    )


def _money(x: float) -> Decimal:
    return Decimal(str(x))


def tariff_from_settings(s: TariffSettings) -> Tariff:
    return Tariff(
        _money(s.fare_base), _money(s.fare_per_km), _money(s.fare_per_minute), _money(s.fare_minimum), s.fare_currency
    )


@lru_cache(maxsize=1)
def current_tariff() -> Tariff:
    """The tariff from the environment (``RIDEHAIL_FARE_*``), read once per process."""
    return tariff_from_settings(TariffSettings())


@lru_cache(maxsize=1)
def quote_ttl_s() -> float:
    """Seconds a quote stays valid (``RIDEHAIL_FARE_QUOTE_TTL_S``), read once per process."""
    return TariffSettings().fare_quote_ttl_s


@lru_cache(maxsize=1)
def current_cancellation_policy() -> CancellationPolicy:
    """The cancellation rule's numbers (grace period, fee, currency), read once per process."""
    s = TariffSettings()
    return CancellationPolicy(
        grace_s=s.cancel_grace_s, fee=_money(s.cancel_fee).quantize(Decimal("0.01")), currency=s.fare_currency
    )
