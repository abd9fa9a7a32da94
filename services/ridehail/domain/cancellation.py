"""The cancellation fee rule, pure: a rider who cancels after the driver has been on the way for
longer than the grace period (or after the driver has arrived) pays a flat fee; cancelling while
the ride is still looking for a driver, within the grace period, or by the driver or the system
is free. The fee is stored on the ride (``rides.cancellation_fee``, and as its ``fare`` with a
``fare_breakdown`` saying why), so trip history shows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CancellationPolicy:
    """The rule's numbers; the running services take them from settings (``common.tariff``)."""

    grace_s: float = 120.0
    fee: Decimal = Decimal("40.00")
    currency: str = "SEK"


DEFAULT_POLICY = CancellationPolicy()


def cancellation_fee(
    status: str, by: str, assigned_at: datetime | None, now: datetime, policy: CancellationPolicy = DEFAULT_POLICY
) -> Decimal:
    """The fee for cancelling a ride in ``status`` (the state before the cancel) at ``now``."""
    if by != "rider":
        return Decimal("0.00")
    if status == "arrived":
        return policy.fee  # the driver is waiting at the pickup
    if status == "assigned" and assigned_at is not None and (now - assigned_at).total_seconds() > policy.grace_s:
        return policy.fee
    return Decimal("0.00")


def fee_breakdown(fee: Decimal, status: str, policy: CancellationPolicy = DEFAULT_POLICY) -> dict[str, object]:
    return {
        "kind": "cancellation_fee",
        "cancellation_fee": str(fee),
        "currency": policy.currency,
        "rule": f"rider cancel after the driver arrived, or more than {policy.grace_s:g} s after assignment",
        "status_at_cancel": status,
    }
