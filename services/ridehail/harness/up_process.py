"""Run the real ``ridehail up`` in a subprocess on free ports, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ridehail.common.ports import free_port

PORT_SETTINGS = ("GATEWAY", "GATEWAY_WS", "AUTH", "MATCHING", "SIMULATOR", "PRICING", "BROKER")


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    database_url: str
    output: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def port(self, name: str) -> int:
        return int(self.env[f"RIDEHAIL_{name.upper()}_PORT"])

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port('gateway')}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port('gateway_ws')}/ws"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port('auth')}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port('broker')}"

    @property
    def login_code(self) -> str | None:
        for line in self.output:
            m = re.search(r"\?login=([A-Za-z0-9_\-]+)", line)
            if m:
                return m.group(1)
        return None

    def text(self) -> str:
        return "\n".join(self.output)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout_s: float = 15.0) -> float:
        """SIGINT (what Ctrl-C sends) and wait; return how long the stop took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout_s)
        return time.monotonic() - started

    def shutdown(self) -> None:
        """Stop the stack as Ctrl-C does; kill whatever is still running after that."""
        children = self.descendants()
        if self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for child in children:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.kill()
            except psutil.NoSuchProcess:
                pass


def _pump(stack: RunningStack, echo: bool) -> None:
    assert stack.proc.stdout is not None
    for raw in iter(stack.proc.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        stack.output.append(line)
        if echo:
            print(line, file=sys.stderr, flush=True)
        if re.search(r"ridehail up in [0-9.]+s", line):
            stack.ready.set()


def start_stack(
    database_url: str,
    state_dir: Path,
    drivers: int,
    extra_env: dict[str, str] | None = None,
    up_args: tuple[str, ...] = (),
    echo: bool = False,
) -> RunningStack:
    """``ridehail up --drivers N`` with every port free and chosen here, on ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update({f"RIDEHAIL_{name}_PORT": str(free_port()) for name in PORT_SETTINGS})
    env.update(
        {
            "RIDEHAIL_DATABASE_URL": database_url,
            "RIDEHAIL_STATE_DIR": str(state_dir),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
    )
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ridehail.cli", "up", "--drivers", str(drivers), *up_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    stack = RunningStack(proc, env, database_url)
    threading.Thread(target=_pump, args=(stack, echo), daemon=True).start()
    return stack


class StackNotReady(RuntimeError):
    """``ridehail up`` exited or did not print its URL table in time."""


def wait_ready(stack: RunningStack, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not stack.ready.wait(0.5):
        if stack.proc.poll() is not None:
            raise StackNotReady(f"ridehail up exited with {stack.proc.returncode}:\n{stack.text()[-6000:]}")
        if time.monotonic() > deadline:
            raise StackNotReady(f"ridehail up not ready after {timeout_s}s:\n{stack.text()[-6000:]}")
