"""Nodes in their own network namespaces, so one can be cut off from everyone (a partition).

Layout: a bridge on the host (``rhb<tag>``, address ``10.213.<n>.254/24``) and, per node, a
namespace ``rh<tag>n<i>`` holding one end of a veth pair (``eth0``, ``10.213.<n>.<i>``) whose other
end (``rhv<tag><i>``) is a port of the bridge. The nodes reach each other across the bridge and
the host (tests, services, benches) reaches them at their addresses. Bringing one host-side link
down cuts that node off from the other nodes and from every client at once; packets are dropped,
not refused, so connections hang the way they do when a switch or a cable fails.

Needs root and ``ip`` (iproute2). Nothing here is used unless a cluster is created with namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

from ridehail.cluster.errors import ClusterError
from ridehail.common.logging import get_logger

log = get_logger(__name__)

SUBNET_PREFIX = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise ClusterError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def namespaces_available() -> tuple[bool, str]:
    """(True, "") when this process may create namespaces and veth pairs, else (False, why not)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is missing"
    return True, ""


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show").stdout
    for _ in range(200):
        n = secrets.randbelow(200) + 20
        if f" {SUBNET_PREFIX}.{n}." not in used:
            return n
    raise ClusterError(f"no free {SUBNET_PREFIX}.N.0/24 subnet for the cluster's namespaces")


@dataclass
class NamespaceNet:
    """A bridge plus one namespace per node; ``close`` removes all of it."""

    nodes: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = 0
    created: list[tuple[str, str]] = field(default_factory=list)  # ("netns"|"link", name), undo order reversed

    @property
    def bridge(self) -> str:
        return f"rhb{self.tag}"

    def namespace(self, node_id: int) -> str:
        return f"rh{self.tag}n{node_id}"

    def host_link(self, node_id: int) -> str:
        return f"rhv{self.tag}{node_id}"

    def address(self, node_id: int) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.{node_id}"

    def exec_prefix(self, node_id: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node_id)]

    def create(self) -> None:
        ok, why = namespaces_available()
        if not ok:
            raise ClusterError(f"cannot put the cluster in network namespaces: {why}")
        self.subnet = _free_subnet()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self.created.append(("link", self.bridge))
            _ip("addr", "add", f"{SUBNET_PREFIX}.{self.subnet}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(1, self.nodes + 1):
                ns, link = self.namespace(i), self.host_link(i)
                _ip("netns", "add", ns)
                self.created.append(("netns", ns))
                _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self.created.append(("link", link))
                _ip("link", "set", link, "master", self.bridge)
                _ip("link", "set", link, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except ClusterError:
            self.close()
            raise
        log.info("netns_created", bridge=self.bridge, subnet=f"{SUBNET_PREFIX}.{self.subnet}.0/24", nodes=self.nodes)

    def cut(self, node_id: int) -> None:
        """Partition one node: its link goes down, its packets are dropped."""
        _ip("link", "set", self.host_link(node_id), "down")
        log.warning("node_partitioned", node=node_id, link=self.host_link(node_id))

    def heal(self, node_id: int) -> None:
        _ip("link", "set", self.host_link(node_id), "up")
        log.warning("node_reconnected", node=node_id, link=self.host_link(node_id))

    def is_cut(self, node_id: int) -> bool:
        out = _ip("-o", "link", "show", self.host_link(node_id), check=False).stdout
        return "state DOWN" in out or ",UP" not in out

    def close(self) -> None:
        for kind, name in reversed(self.created):
            with contextlib.suppress(ClusterError, OSError, subprocess.TimeoutExpired):
                if kind == "netns":
                    _ip("netns", "del", name, check=False)
                else:
                    _ip("link", "del", name, check=False)
        self.created.clear()
