"""A local Apache Kafka cluster: N combined broker + controller nodes, each its own JVM, with
durable log directories under one folder.

``LocalCluster(root).start()`` fetches the jars (once), formats every node's storage (once: the
cluster id is kept in ``root/cluster.json``, so a restart finds its records again), starts every
node and waits until the cluster is healthy: every broker registered and unfenced, a controller
elected. A node that dies during start, a port in use or a corrupt log directory stops it with an
error naming the node, the port or the folder, and the node's log file; it never hangs.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ridehail.cluster.config import NodeSpec, replication_for
from ridehail.cluster.errors import ClusterError
from ridehail.cluster.jars import KafkaRuntime, kafka_runtime
from ridehail.cluster.netns import NamespaceNet
from ridehail.cluster.node import KafkaNode, format_nodes
from ridehail.common.logging import get_logger

log = get_logger(__name__)

LAYOUT_FILE = "cluster.json"
PIDS_FILE = "pids.json"
NETNS_PORT, NETNS_CONTROLLER_PORT = 9092, 9093


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what StorageTool makes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class LocalCluster:
    def __init__(
        self,
        root: Path,
        brokers: int = 3,
        *,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        controller_ports: list[int] | None = None,
        heap_mb: int = 384,
        netns: bool = False,
        cache_root: Path | None = None,
    ) -> None:
        if brokers < 1:
            raise ClusterError("a cluster needs at least one broker")
        self.root = Path(root)
        self.brokers = brokers
        self.host = host
        self.heap_mb = heap_mb
        self.cache_root = cache_root
        self.net: NamespaceNet | None = NamespaceNet(brokers) if netns else None
        self._ports = ports
        self._controller_ports = controller_ports
        self.cluster_id = ""
        self.nodes: dict[int, KafkaNode] = {}
        self.runtime: KafkaRuntime | None = None
        self._admin: AdminClient | None = None

    # -- layout --------------------------------------------------------------------------------------
    @property
    def layout_file(self) -> Path:
        return self.root / LAYOUT_FILE

    @property
    def bootstrap(self) -> str:
        return ",".join(n.spec.address for n in self.nodes.values())

    @property
    def replication(self) -> tuple[int, int]:
        return replication_for(self.brokers)

    def _load_or_create_layout(self) -> None:
        previous: dict[str, Any] = {}
        if self.layout_file.exists():
            try:
                previous = json.loads(self.layout_file.read_text())
            except (OSError, ValueError) as exc:
                raise ClusterError(
                    f"{self.layout_file} is unreadable ({exc}): remove {self.root} to start afresh"
                ) from None
            if int(previous.get("brokers", 0)) != self.brokers:
                raise ClusterError(
                    f"{self.root} holds a {previous.get('brokers')}-node cluster, not {self.brokers}: "
                    f"remove {self.root} (its records are lost) or ask for {previous.get('brokers')} brokers"
                )
        self.cluster_id = previous.get("cluster_id") or new_cluster_id()
        if self.net is not None:
            self.net.create()
            specs = [
                NodeSpec(i, self.net.address(i), NETNS_PORT, NETNS_CONTROLLER_PORT, self.root / f"node-{i}")
                for i in range(1, self.brokers + 1)
            ]
        else:
            ports = self._ports or [free_port(self.host) for _ in range(self.brokers)]
            cports = self._controller_ports or [free_port(self.host) for _ in range(self.brokers)]
            if len(ports) != self.brokers or len(cports) != self.brokers:
                raise ClusterError(f"{self.brokers} brokers need {self.brokers} client and controller ports")
            specs = [
                NodeSpec(i, self.host, ports[i - 1], cports[i - 1], self.root / f"node-{i}")
                for i in range(1, self.brokers + 1)
            ]
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(
            json.dumps(
                {
                    "cluster_id": self.cluster_id,
                    "brokers": self.brokers,
                    "kafka_version": self.runtime.version if self.runtime else None,
                    "nodes": [
                        {"id": s.node_id, "address": s.address, "controller_port": s.controller_port} for s in specs
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        assert self.runtime is not None
        self.nodes = {
            s.node_id: KafkaNode(
                s, self.runtime, self.heap_mb, self.net.exec_prefix(s.node_id) if self.net is not None else None
            )
            for s in specs
        }

    def prepare(self, check_ports: bool = False) -> None:
        """Jars, layout, configs, formatted storage: everything but the processes."""
        if self.runtime is None:
            self.runtime = kafka_runtime(self.cache_root)
        if not self.nodes:
            self._load_or_create_layout()
        if check_ports:
            self._check_ports()
        specs = [n.spec for n in self.nodes.values()]
        for node in self.nodes.values():
            node.write_config(specs)
        formatted = [n.is_formatted() for n in self.nodes.values()]
        if any(formatted) and not all(formatted):
            missing = [n.node_id for n in self.nodes.values() if not n.is_formatted()]
            log.warning("kafka_nodes_reformatted", nodes=missing, reason="log directory missing")
        format_nodes(list(self.nodes.values()), self.cluster_id)
        for node in self.nodes.values():
            node.check_storage(self.cluster_id)

    # -- admin ---------------------------------------------------------------------------------------
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(
                {
                    "bootstrap.servers": self.bootstrap,
                    "socket.connection.setup.timeout.ms": 3000,
                    "log_level": 0,
                    "error_cb": lambda _err: None,  # type: ignore[dict-item]  # a callback; the stub says str | int
                }
            )
        return self._admin

    def node_answers(self, node_id: int, timeout_s: float = 3.0) -> bool:
        """True when the node itself serves metadata on its client listener (not only when the
        controller still lists it: a killed node stays registered until its session times out).
        A fresh client bootstrapped with that one address: its first request can only go there."""
        client = AdminClient(
            {
                "bootstrap.servers": self.nodes[node_id].spec.address,
                "socket.connection.setup.timeout.ms": 2000,
                "log_level": 0,
                "error_cb": lambda _err: None,  # type: ignore[dict-item]  # a callback; the stub says str | int
            }
        )
        try:
            return node_id in client.list_topics(timeout=timeout_s).brokers
        except KafkaException:
            return False

    def registered_brokers(self, timeout_s: float = 3.0) -> set[int]:
        try:
            return set(self.admin().list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return set()

    def quorum_leader(self) -> int | None:
        """The active controller, from the nodes' ``quorum-state`` files (highest epoch wins)."""
        best: tuple[int, int] | None = None
        for node in self.nodes.values():
            path = node.spec.data_dir / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
            if leader >= 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return best[0] if best else None

    def partitions(self, topics: list[str] | None = None, timeout_s: float = 5.0) -> list[PartitionState]:
        md = self.admin().list_topics(timeout=timeout_s)
        out = []
        for name, topic in md.topics.items():
            if topics is not None and name not in topics:
                continue
            for pid, p in topic.partitions.items():
                out.append(PartitionState(name, pid, p.leader, tuple(p.replicas), tuple(p.isrs)))
        return out

    def leader_of(self, topic: str, partition: int = 0) -> int:
        for p in self.partitions([topic]):
            if p.partition == partition:
                return p.leader
        raise ClusterError(f"topic {topic} has no partition {partition}")

    # -- health --------------------------------------------------------------------------------------
    def _raise_if_dead(self, expected: set[int]) -> None:
        for node_id in sorted(expected):
            node = self.nodes[node_id]
            if node.exit_code() is not None:
                raise ClusterError(node.describe_exit())

    def wait_healthy(self, timeout_s: float = 120.0, expected: set[int] | None = None) -> float:
        """Until every expected broker is registered and a controller is elected; seconds waited."""
        want = set(self.nodes) if expected is None else expected
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            self._raise_if_dead(want)
            registered = self.registered_brokers()
            silent = [i for i in sorted(want) if i in registered and not self.node_answers(i, 2.0)]
            if want <= registered and not silent and self.quorum_leader() is not None:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                missing = sorted(want - registered)
                logs = ", ".join(str(self.nodes[i].spec.log_file) for i in sorted({*missing, *silent})) or "-"
                raise ClusterError(
                    f"kafka cluster not healthy after {timeout_s:.0f}s: brokers {missing} not registered, "
                    f"{silent} not answering on their own listener "
                    f"(controller elected: {self.quorum_leader() is not None}); logs: {logs}"
                )
            time.sleep(0.3)

    def wait_in_sync(self, timeout_s: float = 90.0, topics: list[str] | None = None) -> float:
        """Until every partition has a leader and its whole replica set in sync; seconds waited."""
        started = time.monotonic()
        lagging: list[PartitionState] = []
        while time.monotonic() - started < timeout_s:
            self._raise_if_dead({i for i, n in self.nodes.items() if n.proc is not None})
            try:
                parts = self.partitions(topics)
            except KafkaException:
                time.sleep(0.5)
                continue
            lagging = [p for p in parts if p.leader < 0 or set(p.isr) != set(p.replicas)]
            if parts and not lagging:
                return time.monotonic() - started
            time.sleep(0.5)
        raise ClusterError(
            f"partitions not back in sync after {timeout_s:.0f}s: "
            + ", ".join(f"{p.topic}[{p.partition}] isr={list(p.isr)} of {list(p.replicas)}" for p in lagging[:8])
        )

    # -- lifecycle -----------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        if self.net is not None:
            return
        for node in self.nodes.values():
            if node.alive():
                continue
            for port, what in ((node.spec.port, "client"), (node.spec.controller_port, "controller")):
                if port_busy(node.spec.host, port):
                    raise ClusterError(
                        f"port {port} ({what} listener of kafka node {node.node_id}) on {node.spec.host} is busy: "
                        "stop what uses it, or choose other ports "
                        "(RIDEHAIL_BROKER_PORT, RIDEHAIL_KAFKA_CONTROLLER_PORT)"
                    )

    def start(self, timeout_s: float = 120.0) -> float:
        """Prepare, start every node, wait until healthy; seconds from the first JVM to healthy."""
        self.prepare(check_ports=True)
        started = time.monotonic()
        for node in self.nodes.values():
            node.start()
        self._write_pids()
        try:
            self.wait_healthy(timeout_s)
        except ClusterError:
            self.stop(5.0)
            raise
        elapsed = time.monotonic() - started
        log.info("kafka_cluster_healthy", bootstrap=self.bootstrap, seconds=round(elapsed, 1))
        return elapsed

    def start_node(self, node_id: int, wait: bool = True, timeout_s: float = 90.0) -> float:
        node = self.nodes[node_id]
        started = time.monotonic()
        node.start()
        self._write_pids()
        if wait:
            self.wait_healthy(timeout_s, expected={node_id})
        return time.monotonic() - started

    def kill_node(self, node_id: int) -> None:
        self.nodes[node_id].kill()

    def stop_node(self, node_id: int, timeout_s: float = 30.0) -> None:
        self.nodes[node_id].stop(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown of every node at once (kill -9 of any that outlast ``timeout_s``)."""
        for node in self.nodes.values():
            node.terminate()
        for node in self.nodes.values():
            if not node.wait_stopped(timeout_s):
                node.kill()
        self._admin = None
        (self.root / PIDS_FILE).unlink(missing_ok=True)

    def restart(self, timeout_s: float = 120.0) -> float:
        self.stop()
        started = time.monotonic()
        for node in self.nodes.values():
            node.start()
        self._write_pids()
        self.wait_healthy(timeout_s)
        return time.monotonic() - started

    def close(self) -> None:
        """Stop every node and remove the network namespaces (the data stays)."""
        self.stop()
        if self.net is not None:
            self.net.close()

    def _write_pids(self) -> None:
        pids = {str(i): n.pid for i, n in self.nodes.items() if n.pid is not None}
        (self.root / PIDS_FILE).write_text(json.dumps({"bootstrap": self.bootstrap, "pids": pids}) + "\n")

    def dead_nodes(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.proc is not None and n.exit_code() is not None]

    def rss_mb(self) -> dict[int, float]:
        return {i: round(n.rss_mb(), 1) for i, n in self.nodes.items()}


def running_cluster(root: Path) -> dict[str, Any] | None:
    """The bootstrap and pids of a cluster another process runs from ``root``, if it still runs."""
    import psutil

    try:
        info = json.loads((Path(root) / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pids = [int(p) for p in info.get("pids", {}).values()]
    alive = [p for p in pids if psutil.pid_exists(p)]
    if not pids or not alive:
        return None
    return {"bootstrap": info.get("bootstrap", ""), "pids": alive, "all_alive": len(alive) == len(pids)}
