"""One error type for everything that can go wrong with the local cluster, with a message that
names what failed and where (a node, a port, a folder, a log file)."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """A problem with the local Kafka cluster, explained for the user."""
