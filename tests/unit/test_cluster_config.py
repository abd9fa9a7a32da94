"""The local cluster's configuration and its clear errors when Java or Maven is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridehail.cluster import jars
from ridehail.cluster.config import NodeSpec, jvm_options, replication_for, server_properties
from ridehail.cluster.errors import ClusterError
from ridehail.common.topics import replication_for_cluster


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_three_nodes_replicate_three_times_with_two_in_sync_and_no_unclean_election(tmp_path: Path) -> None:
    nodes = [NodeSpec(i, "127.0.0.1", 9091 + i, 9191 + i, tmp_path / f"n{i}") for i in (1, 2, 3)]
    props = _props(server_properties(nodes[1], nodes))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path / "n2" / "data")


def test_topic_replication_follows_the_cluster_size() -> None:
    assert replication_for_cluster(1) == (1, {})  # tansu
    assert replication_for_cluster(3) == (3, {"min.insync.replicas": "2"})
    assert replication_for_cluster(5) == (3, {"min.insync.replicas": "2"})
    assert replication_for(1) == (1, 1)
    assert replication_for(3) == (3, 2)


def test_heap_is_fixed_and_small() -> None:
    opts = jvm_options(384)
    assert "-Xms384m" in opts and "-Xmx384m" in opts
    assert any(o.startswith("-XX:MaxDirectMemorySize=") for o in opts)


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="Java is missing.*17"):
        jars.find_java()


def test_old_java_is_refused_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="Java 11.*needs Java >= 17"):
        jars.find_java()


def test_missing_maven_says_what_it_is_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match=r"Maven \(mvn\) is missing"):
        jars.ensure_jars(tmp_path / "empty-cache")
    assert not (tmp_path / "empty-cache" / jars.cache_key()).exists()  # nothing half-fetched left behind


def test_the_cache_is_keyed_by_the_pinned_version() -> None:
    assert jars.kafka_version() == "4.4.0"
    assert jars.cache_key().startswith("kafka-4.4.0-")
