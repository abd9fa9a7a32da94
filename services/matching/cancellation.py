"""The cancellation fee rule, pure: a rider who cancels after the driver has been on the way for
longer than the grace period (or after the driver has arrived) pays a flat fee; cancelling while
the ride is still looking for a driver, within the grace period, or by the driver or the system
is free. The fee is stored on the ride (``rides.cancellation_fee``, and as its ``fare`` with a
``fare_breakdown`` saying why), so trip history shows it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

CANCEL_GRACE_S = 120.0
CANCELLATION_FEE = Decimal("40.00")
CURRENCY = "SEK"


def cancellation_fee(
    status: str, by: str, assigned_at: datetime | None, now: datetime, grace_s: float = CANCEL_GRACE_S
) -> Decimal:
    """The fee for cancelling a ride in ``status`` (the state before the cancel) at ``now``."""
    if by != "rider":
        return Decimal("0.00")
    if status == "arrived":
        return CANCELLATION_FEE  # the driver is waiting at the pickup
    if status == "assigned" and assigned_at is not None and (now - assigned_at).total_seconds() > grace_s:
        return CANCELLATION_FEE
    return Decimal("0.00")


def fee_breakdown(fee: Decimal, status: str, grace_s: float = CANCEL_GRACE_S) -> dict[str, object]:
    return {
        "kind": "cancellation_fee",
        "cancellation_fee": str(fee),
        "currency": CURRENCY,
        "rule": f"rider cancel after the driver arrived, or more than {grace_s:g} s after assignment",
        "status_at_cancel": status,
    }
