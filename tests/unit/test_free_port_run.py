"""``free_port_run(n)``: a local Kafka of n nodes listens on base + i, so all n ports must be free."""

from __future__ import annotations

import socket

import pytest

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


def test_bench_stack_broker_env() -> None:
    from ridehail.bench.stack import broker_env

    assert broker_env("tansu") == {}
    env = broker_env("kafka", 3)
    client, controller = int(env["RIDEHAIL_BROKER_PORT"]), int(env["RIDEHAIL_KAFKA_CONTROLLER_PORT"])
    assert env["RIDEHAIL_BROKER"] == "kafka" and env["RIDEHAIL_KAFKA_BROKERS"] == "3"
    assert controller == client + 3  # the two runs of three ports do not overlap
    assert all(port_is_free("127.0.0.1", client + i) for i in range(6))
    with pytest.raises(ValueError, match="only for --broker kafka"):
        broker_env("tansu", 3)
    with pytest.raises(ValueError, match="tansu or kafka"):
        broker_env("redpanda")
