"""Bad input and failure on the local cluster: a busy port, a corrupt log directory and a node
that dies during start each stop with an error naming what and where; never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ridehail.cluster.cluster import LocalCluster, free_port
from ridehail.cluster.errors import ClusterError

pytestmark = pytest.mark.integration


def test_a_busy_port_is_named_with_its_node_before_any_jvm_starts(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        cluster = LocalCluster(tmp_path, 1, ports=[busy], controller_ports=[free_port()])
        with pytest.raises(ClusterError, match=rf"port {busy} \(client listener of kafka node 1\)"):
            cluster.start()
        assert not any(n.proc for n in cluster.nodes.values())


@pytest.fixture
def formatted(tmp_path: Path) -> LocalCluster:
    cluster = LocalCluster(tmp_path / "c", 1)
    cluster.prepare()  # jars + formatted storage, no broker process
    return cluster


def test_a_corrupt_meta_properties_is_named_and_nothing_starts(formatted: LocalCluster) -> None:
    meta = formatted.nodes[1].spec.data_dir / "meta.properties"
    meta.write_bytes(b"\x00\x17garbage")
    again = LocalCluster(formatted.root, 1)
    with pytest.raises(ClusterError, match=rf"{meta}.*corrupt or belongs to another cluster"):
        again.start()
    assert not again.nodes[1].proc


def test_a_node_that_dies_during_start_is_reported_with_its_log(formatted: LocalCluster) -> None:
    quorum_state = formatted.nodes[1].spec.data_dir / "__cluster_metadata-0" / "quorum-state"
    quorum_state.write_text("{not json")
    again = LocalCluster(formatted.root, 1)
    started = time.monotonic()
    try:
        with pytest.raises(ClusterError, match=r"kafka node 1 .* exited with code") as err:
            again.start(timeout_s=90)
    finally:
        again.close()
    assert time.monotonic() - started < 90, "the dead node was noticed only at the time-out"
    assert str(again.nodes[1].spec.log_file) in str(err.value)
    assert str(again.nodes[1].spec.data_dir) in str(err.value)


def test_kafka_up_without_java_says_so_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_") and k != "JAVA_HOME"}
    env.update({"PATH": str(Path(sys.executable).parent), "RIDEHAIL_STATE_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "kafka", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Java is missing" in result.stderr
