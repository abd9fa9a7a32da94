"""Child processes with prefixed log lines, parent-death signals and clean termination."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

COLORS = {"broker": 35, "auth": 33, "pricing": 33, "matching": 36, "gateway": 32, "simulator": 34, "postgres": 37}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child if the supervisor dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - not Linux
        pass


def prefix(name: str, color: bool) -> str:
    label = f"{name:<9}|"
    if color:
        return f"\x1b[{COLORS.get(name.split('+')[0], 37)}m{label}\x1b[0m "  # a group: its first service's
    return label + " "


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    restartable: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    stopping: bool = False
    _pump: threading.Thread | None = None

    def start(self, out: IO[str], color: bool) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
        )
        self._pump = threading.Thread(target=self._copy_output, args=(out, color), daemon=True)
        self._pump.start()

    def _copy_output(self, out: IO[str], color: bool) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        tag = prefix(self.name, color)
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            out.write(f"{tag}{line}\n")
            out.flush()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def terminate(self) -> None:
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_all(children: list[Child], timeout_s: float, say: Callable[[str], None]) -> None:
    """SIGTERM every child (reverse start order), wait up to ``timeout_s``, then SIGKILL stragglers."""
    for child in reversed(children):
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in reversed(children):
        if child.proc is None:
            continue
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.proc.wait(remaining)
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop within {timeout_s:.0f}s: killing it")
            child.kill()
            child.proc.wait(5)
        if child._pump is not None:
            child._pump.join(timeout=1)


def service_argv(name: str) -> list[str]:
    """How ``ridehail up`` starts one service: the light launcher, not the whole CLI."""
    return [sys.executable, "-m", "ridehail.serve", name]
