"""``free_port_run(n)``: a local Kafka of n nodes listens on base + i, so all n ports must be free."""

from __future__ import annotations

import socket

from ridehail.common.ports import free_port_run, port_is_free


def test_every_port_of_the_run_is_free() -> None:
    base = free_port_run(3)
    assert all(port_is_free("127.0.0.1", base + i) for i in range(3))


def test_a_taken_port_is_not_part_of_a_run() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        for _ in range(20):
            base = free_port_run(2)
            assert taken not in (base, base + 1)
