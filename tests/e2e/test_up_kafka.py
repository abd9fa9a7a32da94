"""`ridehail up` on the local Apache Kafka cluster (RIDEHAIL_BROKER=kafka): three broker JVMs
under the stack, topics replicated three times with min.insync.replicas=2, pings reach
Postgres, a killed node is reported and started again, and Ctrl-C stops the services and every
Kafka node (nothing left behind)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from ridehail.domain.topics import DRIVER_LOCATION
from tests.fixtures.stack import drop_database, start_stack, wait_ready

pytestmark = pytest.mark.e2e


def _free_run(n: int) -> int:
    """A port p with p .. p+n-1 all free on 127.0.0.1."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports")


async def _drivers_in_db(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM drivers"))
    finally:
        await conn.close()


def test_up_runs_on_the_local_kafka_cluster_and_stops_every_node(tmp_path: Path) -> None:
    broker_port, controller_port = _free_run(3), _free_run(3)
    stack = start_stack(
        tmp_path,
        drivers=30,
        extra_env={
            "RIDEHAIL_BROKER": "kafka",
            "RIDEHAIL_BROKER_PORT": str(broker_port),
            "RIDEHAIL_KAFKA_CONTROLLER_PORT": str(controller_port),
        },
    )
    try:
        wait_ready(stack, timeout_s=240)
        children = stack.descendants()
        jvms = [p for p in children if "kafka.Kafka" in " ".join(p.cmdline())]
        assert len(jvms) == 3, f"expected 3 Kafka nodes under ridehail up, found {len(jvms)}"
        assert "tansu" not in " ".join(" ".join(p.cmdline()) for p in children)
        bootstrap = ",".join(f"127.0.0.1:{broker_port + i}" for i in range(3))
        assert bootstrap in stack.text()

        admin = AdminClient({"bootstrap.servers": bootstrap})
        md = admin.list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3]
        for p in md.topics[DRIVER_LOCATION.name].partitions.values():
            assert len(p.replicas) == 3 and len(p.isrs) == 3
        resource = ConfigResource(ConfigResource.Type.TOPIC, DRIVER_LOCATION.name)
        config = admin.describe_configs([resource])[resource].result(10)
        assert config["min.insync.replicas"].value == "2"

        deadline = time.monotonic() + 60
        while asyncio.run(_drivers_in_db(stack.database_url)) < 30:
            assert time.monotonic() < deadline, "pings did not reach the drivers table within 60 s"
            time.sleep(0.5)

        # A node that dies is reported and started again by the stack (the cluster keeps serving).
        jvms[0].kill()
        deadline = time.monotonic() + 30
        while "restarting kafka node" not in stack.text():
            assert time.monotonic() < deadline, "the death of a Kafka node was not reported"
            time.sleep(0.2)
        while len([p for p in stack.descendants() if "kafka.Kafka" in " ".join(p.cmdline())]) < 3:
            assert time.monotonic() < deadline, "the dead Kafka node was not started again"
            time.sleep(0.2)
        children = stack.descendants()

        took = stack.stop(timeout_s=60)
        assert took < 45, f"stopping took {took:.1f}s"
        assert stack.proc.returncode == 0, stack.text()[-3000:]
        time.sleep(0.5)
        alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left behind: {[p.cmdline()[:3] for p in alive]}"
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
        for p in stack.descendants():
            p.kill()
        drop_database(stack)
