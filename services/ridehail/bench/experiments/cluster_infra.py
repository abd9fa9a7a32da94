"""The local Apache Kafka cluster as the benches' broker, and the cluster faults as outage
scenarios with the same ``stop()`` / ``resume()`` shape as the other components.

Scenarios (``ridehail bench outage --broker kafka``):

* ``broker-1-of-3``: kill -9 of the node leading partition 0 of the location topic; started again after the outage;
* ``broker-2-of-3``: kill -9 of that leader and of the active controller (another node if they coincide):
  below ``min.insync.replicas`` and without a controller quorum;
* ``partition-1-of-3``: that leader's link brought down (network namespaces), brought up after the outage;
* ``cluster-restart``: every node stopped (controlled shutdown), all started again after the outage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ridehail.cluster.cluster import LocalCluster
from ridehail.cluster.faults import KillBrokers, PartitionBroker, RestartCluster
from ridehail.cluster.netns import namespaces_available
from ridehail.common.topics import ensure_topics
from ridehail.domain.topics import DRIVER_LOCATION

KAFKA_SCENARIOS = ("broker-1-of-3", "broker-2-of-3", "partition-1-of-3", "cluster-restart")
KAFKA_STOPS = {
    "broker-1-of-3": "kill -9 of the node leading ridehail.driver.location.v1[0], started again after the outage",
    "broker-2-of-3": "kill -9 of that leader and of the active controller (another node if they coincide): "
    "below min.insync.replicas=2 and without a controller quorum; both started again after the outage",
    "partition-1-of-3": "that leader's veth link brought down (it keeps running, cut off from the other nodes and "
    "every client), brought up after the outage",
    "cluster-restart": "every node stopped at once (SIGTERM, controlled shutdown), all started again after the outage",
}


class ClusterScenario:
    """One fault as an outage component: ``stop`` injects it, ``resume`` repairs it."""

    def __init__(self, cluster: LocalCluster, scenario: str) -> None:
        topic = DRIVER_LOCATION.name
        if scenario == "broker-1-of-3":
            self.fault: Any = KillBrokers(cluster, topic, ("leader",))
        elif scenario == "broker-2-of-3":
            self.fault = KillBrokers(cluster, topic, ("leader", "controller"))
        elif scenario == "partition-1-of-3":
            self.fault = PartitionBroker(cluster, topic, "leader")
        elif scenario == "cluster-restart":
            self.fault = RestartCluster(cluster)
        else:
            raise ValueError(f"unknown cluster scenario {scenario!r}; choose from {KAFKA_SCENARIOS}")
        self.info: dict[str, Any] = {}

    def stop(self) -> None:
        self.info = self.fault.inject()

    def resume(self) -> None:
        self.fault.repair()

    def start_again(self) -> None:
        """Undo the fault without waiting for the cluster's health: a killed node is started (its JVM
        takes a while; ``PrivateCluster.settle`` waits for it), every other fault is repaired in full."""
        if isinstance(self.fault, KillBrokers):
            for node in self.fault.victims:
                self.fault.cluster.nodes[node].start()
        else:
            self.fault.repair()


class PrivateCluster:
    """A 3-node cluster in a temp folder (in network namespaces when this process may create them)."""

    description = "local Apache Kafka cluster"

    def __init__(self, root: Path, brokers: int = 3, heap_mb: int = 384) -> None:
        netns, self.netns_unavailable = namespaces_available()
        self.cluster = LocalCluster(root / "kafka", brokers, heap_mb=heap_mb, netns=netns)
        self.bootstrap = ""
        self.start_s = 0.0

    @property
    def has_namespaces(self) -> bool:
        return self.cluster.net is not None

    def start(self) -> None:
        try:
            self.start_s = self.cluster.start()
            self.bootstrap = self.cluster.bootstrap
            ensure_topics(self.bootstrap)
            self.cluster.wait_in_sync(120)
        except BaseException:
            self.close()  # the JVMs and the namespaces, even when start-up failed half-way
            raise

    def scenario(self, name: str) -> ClusterScenario:
        if name == "partition-1-of-3" and not self.has_namespaces:
            raise RuntimeError(f"partition-1-of-3 needs network namespaces: {self.netns_unavailable}")
        return ClusterScenario(self.cluster, name)

    def settle(self, timeout_s: float = 180.0) -> float:
        """After a repair: every node registered and every partition in sync again."""
        self.cluster.wait_healthy(timeout_s)
        return self.cluster.wait_in_sync(timeout_s)

    def describe(self) -> dict[str, Any]:
        replicas, min_isr = self.cluster.replication
        runtime = self.cluster.runtime
        return {
            "kind": "kafka",
            "description": f"local Apache Kafka {runtime.version if runtime else '?'} cluster: "
            f"{self.cluster.brokers} KRaft nodes (broker+controller), one JVM each, durable log dirs",
            "replication_factor": replicas,
            "min_insync_replicas": min_isr,
            "unclean_leader_election": False,
            "heap_mb_per_node": self.cluster.heap_mb,
            "network_namespaces": self.has_namespaces,
            "start_to_healthy_s": round(self.start_s, 1),
            "rss_mb_per_node": self.cluster.rss_mb(),
        }

    def pids(self) -> list[int]:
        return [n.pid for n in self.cluster.nodes.values() if n.pid is not None]

    def close(self) -> None:
        self.cluster.close()
