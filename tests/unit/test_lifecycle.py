"""The ride state machine: every legal transition, and every illegal one refused with a reason."""

from __future__ import annotations

import itertools

import pytest

from ridehail.common.models import RIDE_STATUSES
from ridehail.domain.lifecycle import (
    CANCELLABLE_STATUSES,
    DRIVER_STATUS_FOR,
    TERMINAL_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    next_status,
)

LEGAL = {
    ("requested", "ride.offered"): "offered",
    ("offered", "ride.assigned"): "assigned",
    ("offered", "ride.cancelled"): "cancelled",
    ("offered", "ride.expired"): "expired",
    ("requested", "ride.assigned"): "assigned",
    ("assigned", "ride.arrived"): "arrived",
    ("arrived", "ride.picked_up"): "in_progress",
    ("in_progress", "ride.completed"): "completed",
    ("requested", "ride.cancelled"): "cancelled",
    ("assigned", "ride.cancelled"): "cancelled",
    ("arrived", "ride.cancelled"): "cancelled",
    ("requested", "ride.expired"): "expired",
}


@pytest.mark.parametrize(("current", "event"), sorted(itertools.product(RIDE_STATUSES, TRANSITIONS)))
def test_transition_table(current: str, event: str) -> None:
    expected = LEGAL.get((current, event))
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            next_status(current, event)
        assert current in info.value.reason and event in info.value.reason
    else:
        assert next_status(current, event) == expected


def test_happy_path_reaches_completed() -> None:
    status = "requested"
    for event in ("ride.assigned", "ride.arrived", "ride.picked_up", "ride.completed"):
        status = next_status(status, event)
    assert status == "completed"


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_states_accept_nothing(terminal: str) -> None:
    for event in TRANSITIONS:
        with pytest.raises(IllegalTransition):
            next_status(terminal, event)


def test_unknown_ride_and_unknown_event_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="unknown ride"):
        next_status(None, "ride.arrived")
    with pytest.raises(IllegalTransition, match="not a ride transition"):
        next_status("requested", "ride.teleported")


def test_cancel_only_before_pickup() -> None:
    assert {"requested", "offered", "assigned", "arrived"} == CANCELLABLE_STATUSES


def test_every_target_status_is_a_schema_status_with_a_driver_rule() -> None:
    for transition in TRANSITIONS.values():
        assert transition.target in RIDE_STATUSES
        assert transition.target in DRIVER_STATUS_FOR
        assert transition.sources <= set(RIDE_STATUSES)
