"""What one node of the local cluster is: its ports, folders, ``server.properties`` and JVM options.

Every node is a combined broker + controller (``process.roles=broker,controller``) with a static
controller quorum of all nodes. The replication defaults are the production ones the issue asks
for: replication factor 3 (or the node count, if smaller), ``min.insync.replicas=2`` with 3
replicas, unclean leader election off, no topic auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOG4J2_PROPERTIES = """\
# Written by ridehail.cluster: the node's own log (stdout, redirected to node.log).
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# per-connection and per-request chatter would drown what matters
logger.network.name = org.apache.kafka.clients.NetworkClient
logger.network.level = ERROR
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.utils.name = org.apache.kafka.common.utils.AppInfoParser
logger.utils.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
"""


@dataclass(frozen=True)
class NodeSpec:
    node_id: int
    host: str  # the address the node listens on and advertises (127.0.0.1, or its namespace's address)
    port: int  # clients and the other brokers
    controller_port: int  # the KRaft quorum
    folder: Path  # node.log, server.properties, data/

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def properties_file(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.folder / "node.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def replication_for(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of ``brokers`` nodes."""
    replicas = min(3, brokers)
    return replicas, 2 if replicas >= 3 else 1


def server_properties(node: NodeSpec, nodes: list[NodeSpec]) -> str:
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
    replicas, min_isr = replication_for(len(nodes))
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node.data_dir,
        # replication: what the promises rest on
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "unclean.leader.election.enable": "false",
        "auto.create.topics.enable": "false",
        # small machine: fewer threads and buffers than the defaults, same semantics
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "num.replica.fetchers": 1,
        "background.threads": 4,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "offsets.topic.num.partitions": 12,
        "group.initial.rebalance.delay.ms": 0,
        # Kafka refuses session time-outs under 6 s by default; matching asks for 4 s (its failover)
        "group.min.session.timeout.ms": 1000,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
    }
    lines = [f"# Written by ridehail.cluster for node {node.node_id}; rewritten at every start."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def jvm_options(heap_mb: int) -> list[str]:
    """Fixed heap (sized so three nodes fit in ~1.5 GB), the serial collector, capped direct memory."""
    return [
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",
        "-XX:MaxDirectMemorySize=96m",
        "-XX:MaxMetaspaceSize=128m",
        "-XX:ReservedCodeCacheSize=64m",
        "-Xss512k",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:TieredStopAtLevel=1",  # C1 only: three JVMs start much faster on 2 cores; ample for this load
        "-XX:CICompilerCount=1",
        "-Djava.awt.headless=true",
    ]
