"""The presence sweep: what matching's /stats and gauges say about presence, and the flag on
rides whose driver went silent (:mod:`ridehail.domain.presence` has the rule).

Presence itself needs no sweep: it is ``drivers.last_seen_ms`` against the clock, read by every
candidate query and every claim. The sweep counts present and free drivers and looks for
drivers that hold a ride but stopped pinging. Such a ride is flagged (a warning once, the
``ridehail_matching_drivers_silent_on_ride`` gauge, ``driver_present: false`` in the ride's API
view), not cancelled: a tunnel or a dead phone battery is not a cancelled trip, and the driver
comes back with its next ping (the pickup time-out still ends an assignment that never arrives).
A silent driver holding an *offer* is not flagged here: the offer clock withdraws that offer.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.logging import get_logger
from ridehail.domain.events import now_ms
from ridehail.matching.state import MatchingState, PresenceView
from ridehail.stores import drivers, rides

log = get_logger(__name__)

FLAGGED_STATUSES = ("assigned", "arrived", "in_progress")
LOGGED_PER_SWEEP = 5  # newly silent drivers named one by one per sweep; beyond that, a count


async def sweep(session: AsyncSession, state: MatchingState) -> PresenceView:
    now = now_ms()
    seen_since = state.seen_since_ms(now)
    counts = await drivers.presence_counts(session, seen_since)
    silent = {
        r["ride_id"]: (r["driver_id"], r["status"], r["last_seen_ms"])
        for r in await drivers.silent_on_rides(session, seen_since)
        if r["status"] in FLAGGED_STATUSES
    }
    view = PresenceView(
        known=int(counts["known"]),
        present=int(counts["present"]),
        free=int(counts["free"]),
        waiting=await rides.count_waiting_rides(session),
        silent_on_ride={ride_id: driver for ride_id, (driver, _, _) in silent.items()},
    )
    before = state.presence.silent_on_ride
    new = [(ride_id, *row) for ride_id, row in silent.items() if ride_id not in before]
    for ride_id, driver_id, status, last_seen in new[:LOGGED_PER_SWEEP]:
        silent_s = round((now - int(last_seen)) / 1000, 1) if last_seen else None
        log.warning("driver_silent_on_ride", ride_id=ride_id, driver_id=driver_id, status=status, silent_s=silent_s)
    if len(new) > LOGGED_PER_SWEEP:
        log.warning("drivers_silent_on_ride", count=len(new), not_listed=len(new) - LOGGED_PER_SWEEP)
    cleared = [ride_id for ride_id in before if ride_id not in silent]  # the driver pinged, or the ride ended
    if cleared:
        log.info("silent_driver_flags_cleared", count=len(cleared), rides=cleared[:LOGGED_PER_SWEEP])
    return view
