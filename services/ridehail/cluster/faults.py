"""The faults the tests and ``ridehail bench outage --broker kafka`` inject into a local cluster.

Each fault has ``inject()`` (returns what it did, for the record) and ``repair()``; after a
repair the caller waits for ``cluster.wait_in_sync()`` before the next fault. Targets are chosen
the way they hurt most: the leader of a busy partition, the active controller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ridehail.cluster.cluster import LocalCluster
from ridehail.cluster.errors import ClusterError
from ridehail.common.logging import get_logger

log = get_logger(__name__)

Target = Literal["leader", "controller"] | int


def pick_node(cluster: LocalCluster, target: Target, topic: str, partition: int = 0) -> int:
    """The node id for ``target``: a number, the leader of ``topic[partition]``, or the active controller."""
    if isinstance(target, int):
        return target
    if target == "leader":
        leader = cluster.leader_of(topic, partition)
        if leader < 0:
            raise ClusterError(f"{topic}[{partition}] has no leader to target")
        return leader
    controller = cluster.quorum_leader()
    if controller is None:
        raise ClusterError("no active controller to target")
    return controller


@dataclass
class KillBrokers:
    """kill -9 of one node (``targets=("leader",)``) or several; repair starts them again."""

    cluster: LocalCluster
    topic: str
    targets: tuple[Target, ...] = ("leader",)
    partition: int = 0
    victims: list[int] = field(default_factory=list)

    def inject(self) -> dict[str, Any]:
        controller = self.cluster.quorum_leader()
        for target in self.targets:
            node = pick_node(self.cluster, target, self.topic, self.partition)
            if node in self.victims:  # e.g. the leader is also the controller: take another node
                node = next(i for i in self.cluster.nodes if i not in self.victims)
            self.victims.append(node)
        for node in self.victims:
            self.cluster.kill_node(node)
        return {
            "fault": "kill -9",
            "nodes": list(self.victims),
            "targets": [str(t) for t in self.targets],
            "controller_before": controller,
            "at": time.time(),
        }

    def repair(self) -> None:
        for node in self.victims:
            self.cluster.nodes[node].start()
        self.cluster.wait_healthy(120.0, expected=set(self.victims))


@dataclass
class PartitionBroker:
    """Cut one node's link (network namespaces): it keeps running, nobody reaches it, it reaches nobody."""

    cluster: LocalCluster
    topic: str
    target: Target = "leader"
    partition: int = 0
    victim: int | None = None

    def inject(self) -> dict[str, Any]:
        if self.cluster.net is None:
            raise ClusterError("a network partition needs a cluster in network namespaces (LocalCluster(netns=True))")
        self.victim = pick_node(self.cluster, self.target, self.topic, self.partition)
        controller = self.cluster.quorum_leader()
        self.cluster.net.cut(self.victim)
        return {
            "fault": "link down",
            "nodes": [self.victim],
            "targets": [str(self.target)],
            "controller_before": controller,
            "at": time.time(),
        }

    def repair(self) -> None:
        assert self.cluster.net is not None and self.victim is not None
        self.cluster.net.heal(self.victim)
        self.cluster.wait_healthy(120.0, expected={self.victim})


@dataclass
class RestartCluster:
    """Stop every node (controlled shutdown, all at once), then start them all again."""

    cluster: LocalCluster
    stopped_s: float = 0.0

    def inject(self) -> dict[str, Any]:
        started = time.monotonic()
        self.cluster.stop()
        self.stopped_s = time.monotonic() - started
        return {
            "fault": "stop all",
            "nodes": sorted(self.cluster.nodes),
            "stop_s": round(self.stopped_s, 1),
            "at": time.time(),
        }

    def repair(self) -> None:
        for node in self.cluster.nodes.values():
            node.start()
        self.cluster.wait_healthy(120.0)
