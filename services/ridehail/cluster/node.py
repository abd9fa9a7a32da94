"""One Kafka node: a JVM of its own (``kafka.Kafka server.properties``), so a kill -9 or a cut
link hits this node only. Formatting, start, graceful stop, kill -9, and what its log said."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from pathlib import Path

import psutil

from ridehail.cluster.config import LOG4J2_PROPERTIES, NodeSpec, jvm_options, server_properties
from ridehail.cluster.errors import ClusterError
from ridehail.cluster.jars import BROKER_MAIN, STORAGE_TOOL_MAIN, KafkaRuntime
from ridehail.common.logging import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGTERM the node if the process that started it dies (even by SIGKILL): no orphan JVMs."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def read_meta_properties(data_dir: Path) -> dict[str, str]:
    path = data_dir / "meta.properties"
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


class KafkaNode:
    def __init__(
        self,
        spec: NodeSpec,
        runtime: KafkaRuntime,
        heap_mb: int,
        exec_prefix: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.heap_mb = heap_mb
        self.exec_prefix = exec_prefix or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def node_id(self) -> int:
        return self.spec.node_id

    # -- files -------------------------------------------------------------------------------------
    @property
    def log4j_file(self) -> Path:
        return self.spec.folder / "log4j2.properties"

    def write_config(self, nodes: list[NodeSpec]) -> None:
        self.spec.folder.mkdir(parents=True, exist_ok=True)
        self.spec.properties_file.write_text(server_properties(self.spec, nodes))
        self.log4j_file.write_text(LOG4J2_PROPERTIES)

    def is_formatted(self) -> bool:
        return (self.spec.data_dir / "meta.properties").exists()

    def java_command(self, main: str, *args: str) -> list[str]:
        return [
            *self.exec_prefix,
            str(self.runtime.java),
            *jvm_options(self.heap_mb),
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.spec.folder}",
            "-cp",
            self.runtime.classpath,
            main,
            *args,
        ]

    def format_command(self, cluster_id: str) -> list[str]:
        # The formatter needs little memory: a small heap keeps three formats at once cheap.
        cmd = self.java_command(
            STORAGE_TOOL_MAIN, "format", "--cluster-id", cluster_id, "--config", str(self.spec.properties_file)
        )
        return [c if not c.startswith(("-Xms", "-Xmx")) else c[:4] + "128m" for c in cmd]

    def check_storage(self, cluster_id: str) -> None:
        """A clear error, before the JVM starts, when the data folder is not this node's."""
        data = self.spec.data_dir
        meta = data / "meta.properties"
        hint = f"remove {self.spec.folder} to start this node afresh (its records are lost), or restore it"
        if not data.is_dir():
            raise ClusterError(f"kafka node {self.node_id}: log directory {data} is missing; {hint}")
        try:
            values = read_meta_properties(data)
        except OSError as exc:
            raise ClusterError(f"kafka node {self.node_id}: cannot read {meta}: {exc}; {hint}") from None
        if values.get("cluster.id") != cluster_id or values.get("node.id") != str(self.node_id):
            raise ClusterError(
                f"kafka node {self.node_id}: {meta} is corrupt or belongs to another cluster "
                f"(cluster.id={values.get('cluster.id')!r}, node.id={values.get('node.id')!r}; "
                f"expected {cluster_id!r}, {self.node_id}); {hint}"
            )
        if not (data / "__cluster_metadata-0").is_dir():
            raise ClusterError(f"kafka node {self.node_id}: {data} has no __cluster_metadata-0 folder; {hint}")

    # -- process -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.alive():
            return
        self.spec.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self._log_offset = self.spec.log_file.stat().st_size
        out = open(self.spec.log_file, "ab")  # noqa: SIM115 - owned by the child
        # A parent-death signal fires when the *thread* that forked exits: only from the main thread.
        preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        try:
            self.proc = subprocess.Popen(
                self.java_command(BROKER_MAIN, str(self.spec.properties_file)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise ClusterError(f"kafka node {self.node_id}: cannot start {self.runtime.java}: {exc}") from None
        finally:
            out.close()
        log.info("kafka_node_started", node=self.node_id, pid=self.proc.pid, address=self.spec.address)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code if the node was started and has died, else None."""
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        """kill -9: no shutdown hook, no flush, no controlled leadership hand-over."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            log.warning("kafka_node_killed", node=self.node_id)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait_stopped(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM: leadership moves away first), kill -9 after ``timeout_s``."""
        self.terminate()
        if not self.wait_stopped(timeout_s):
            log.warning("kafka_node_stop_timeout", node=self.node_id, timeout_s=timeout_s)
            self.kill()

    def rss_mb(self) -> float:
        pid = self.pid
        if pid is None:
            return 0.0
        try:
            return psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def log_problem(self, lines: int = 6) -> str:
        """The last ERROR/FATAL lines the node logged since its last start (or its last lines)."""
        try:
            with open(self.spec.log_file, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        all_lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in all_lines if " ERROR " in line or " FATAL " in line or "Exception" in line]
        chosen = (errors or all_lines)[-lines:]
        return "\n".join(line[:400] for line in chosen)

    def describe_exit(self) -> str:
        code = self.exit_code()
        problem = self.log_problem()
        return (
            f"kafka node {self.node_id} ({self.spec.address}) exited with code {code}"
            + (f":\n{problem}" if problem else "")
            + f"\n  log: {self.spec.log_file}\n  data: {self.spec.data_dir}"
        )


def format_nodes(nodes: list[KafkaNode], cluster_id: str, timeout_s: float = 120.0) -> None:
    """Format the storage of every node that is not formatted yet, all at once."""
    todo = [n for n in nodes if not n.is_formatted()]
    procs = []
    for node in todo:
        node.spec.data_dir.parent.mkdir(parents=True, exist_ok=True)
        out = open(node.spec.folder / "format.log", "wb")  # noqa: SIM115
        procs.append((node, subprocess.Popen(node.format_command(cluster_id), stdout=out, stderr=subprocess.STDOUT)))
        out.close()
    for node, proc in procs:
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise ClusterError(f"formatting kafka node {node.node_id}'s storage took over {timeout_s:.0f}s") from None
        if code != 0 or not node.is_formatted():
            tail = (node.spec.folder / "format.log").read_text(errors="replace").strip().splitlines()[-8:]
            raise ClusterError(
                f"formatting the storage of kafka node {node.node_id} ({node.spec.data_dir}) failed "
                f"(exit {code}):\n" + "\n".join(tail)
            )
    if todo:
        log.info("kafka_storage_formatted", nodes=[n.node_id for n in todo], cluster_id=cluster_id)


def kill_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
