"""The local cluster under a long-running command (``ridehail up``, ``ridehail kafka up``):
start it (or find the one another command already runs from the same state folder), restart a
node that dies (a few times a minute at most, then give up loudly instead of flapping), stop it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ridehail.cluster.cluster import LocalCluster, running_cluster
from ridehail.cluster.errors import ClusterError
from ridehail.cluster.settings import ClusterSettings

MAX_NODE_RESTARTS_PER_MINUTE = 3

Say = Callable[[str], None]


def cluster_from_settings(
    settings: ClusterSettings, brokers: int | None = None, heap_mb: int | None = None
) -> LocalCluster:
    n = brokers or settings.kafka_brokers
    return LocalCluster(
        settings.kafka_state_dir,
        n,
        host="127.0.0.1" if settings.host in ("0.0.0.0", "127.0.0.1") else settings.host,
        ports=[settings.broker_port + i for i in range(n)],
        controller_ports=[settings.kafka_controller_port + i for i in range(n)],
        heap_mb=heap_mb or settings.kafka_heap_mb,
        cache_root=settings.kafka_cache_dir,
    )


@dataclass
class ManagedCluster:
    """A cluster this process started (``owned``) or one it found running and only uses."""

    bootstrap: str
    cluster: LocalCluster | None = None
    say: Say = print
    restarts: dict[int, list[float]] = field(default_factory=dict)

    @property
    def owned(self) -> bool:
        return self.cluster is not None

    @classmethod
    def start_or_reuse(cls, settings: ClusterSettings, say: Say, brokers: int | None = None) -> ManagedCluster:
        root = settings.kafka_state_dir
        found = running_cluster(root)
        if found is not None and found["all_alive"]:
            say(f"using the local Kafka cluster already running from {root} ({found['bootstrap']})")
            return cls(bootstrap=found["bootstrap"], say=say)
        if found is not None:
            raise ClusterError(
                f"a local Kafka cluster from {root} is partly running (pids {found['pids']}): "
                "stop it (ridehail kafka up was Ctrl-C'd?) before starting another"
            )
        cluster = cluster_from_settings(settings, brokers)
        replicas, min_isr = cluster.replication
        say(
            f"starting a local Apache Kafka cluster: {cluster.brokers} nodes, replication factor {replicas}, "
            f"min.insync.replicas {min_isr}, data under {root}"
        )
        started = time.monotonic()
        cluster.start()
        say(f"kafka cluster healthy in {time.monotonic() - started:.1f}s: {cluster.bootstrap}")
        return cls(bootstrap=cluster.bootstrap, cluster=cluster, say=say)

    def tick(self) -> bool:
        """Restart nodes that died; False when one died too often (the caller should stop)."""
        if self.cluster is None:
            return True
        now = time.monotonic()
        for node_id in self.cluster.dead_nodes():
            node = self.cluster.nodes[node_id]
            recent = [t for t in self.restarts.get(node_id, []) if now - t < 60]
            if len(recent) >= MAX_NODE_RESTARTS_PER_MINUTE:
                self.say(f"kafka node {node_id} died {len(recent) + 1} times within a minute: giving up")
                self.say(node.describe_exit())
                return False
            self.say(f"{node.describe_exit()}\nrestarting kafka node {node_id}")
            recent.append(now)
            self.restarts[node_id] = recent
            node.start()
        return True

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
