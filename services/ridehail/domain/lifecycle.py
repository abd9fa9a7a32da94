"""The ride state machine: which event moves a ride from which state to which, and the column
that records when. Pure data and one function, shared by the gateway (request, cancel) and
matching (assign, expire, driver-side events)."""

from __future__ import annotations

from dataclasses import dataclass


class IllegalTransition(ValueError):
    """An event that does not apply to the ride's current state; ``reason`` goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[str]
    target: str
    timestamp_column: str


TRANSITIONS: dict[str, Transition] = {
    "ride.offered": Transition(frozenset({"requested"}), "offered", "offered_at"),
    "ride.assigned": Transition(frozenset({"requested", "offered"}), "assigned", "assigned_at"),
    "ride.arrived": Transition(frozenset({"assigned"}), "arrived", "arrived_at"),
    "ride.picked_up": Transition(frozenset({"arrived"}), "in_progress", "picked_up_at"),
    "ride.completed": Transition(frozenset({"in_progress"}), "completed", "completed_at"),
    "ride.cancelled": Transition(
        frozenset({"requested", "offered", "assigned", "arrived"}), "cancelled", "cancelled_at"
    ),
    "ride.expired": Transition(frozenset({"requested", "offered"}), "expired", "expired_at"),
}

INITIAL_STATUS = "requested"
TERMINAL_STATUSES = frozenset({"completed", "cancelled", "expired"})
CANCELLABLE_STATUSES = TRANSITIONS["ride.cancelled"].sources
# Driver status while the ride is in each state (None: the driver is released).
DRIVER_STATUS_FOR = {
    "offered": "offered",  # held for the ride, not yet assigned
    "assigned": "to_pickup",
    "arrived": "to_pickup",
    "in_progress": "on_trip",
    "completed": None,
    "cancelled": None,
    "expired": None,
}


def next_status(current: str | None, event_type: str) -> str:
    """The ride's state after ``event_type``; raises :class:`IllegalTransition` if not allowed."""
    transition = TRANSITIONS.get(event_type)
    if transition is None:
        raise IllegalTransition(f"{event_type!r} is not a ride transition")
    if current is None:
        raise IllegalTransition(f"{event_type} for an unknown ride")
    if current not in transition.sources:
        allowed = ", ".join(sorted(transition.sources))
        raise IllegalTransition(
            f"illegal transition {current} -> {transition.target} by {event_type} (needs {allowed})"
        )
    return transition.target
