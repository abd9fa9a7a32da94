"""Broker or Postgres unreachable at start: every service stays up, answers /readyz with 503,
logs the problem once (not in a loop), and becomes ready by itself when the dependency is back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from ridehail.catalog import SERVICES, port_setting
from ridehail.common.broker import start_broker, stop_process
from ridehail.common.ports import free_port
from ridehail.common.topics import ensure_topics

pytestmark = pytest.mark.integration

PORT_SETTING = {s.name: port_setting(s.ports[0]) for s in SERVICES}


class TcpSwitch:
    """A TCP forwarder to Postgres that the test can cut and restore: a real network outage.

    The target is the session database's server: a TCP host and port, or a Unix socket folder."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        socket_dir = str(url.query.get("host", "")) if url.query.get("host") else ""
        self.port = free_port()
        self.target_host = url.host or "127.0.0.1"
        self.target_port = url.port or 5432
        self.target_socket = f"{socket_dir}/.s.PGSQL.{self.target_port}" if socket_dir.startswith("/") else None
        self.database_url = url.set(host="127.0.0.1", port=self.port, query={}).render_as_string(hide_password=False)
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.conns: list[asyncio.StreamWriter] = []
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.target_socket is not None:
                up_r, up_w = await asyncio.open_unix_connection(self.target_socket)
            else:
                up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self.conns += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def up(self) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self._call(start())

    def down(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for w in self.conns:
                w.close()
            self.conns.clear()

        self._call(stop())


def _spawn(service: str, env_extra: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(env_extra)
    env[PORT_SETTING[service]] = str(port)
    if service == "gateway":
        env["RIDEHAIL_GATEWAY_WS_PORT"] = str(free_port())
    env["RIDEHAIL_STATE_DIR"] = str(log.parent)
    env["RIDEHAIL_DRIVERS"] = "20"
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ridehail.cli", "serve", service], env=env, stdout=out, stderr=subprocess.STDOUT
    )
    return proc, port


def _ready(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def _wait_status(proc: subprocess.Popen[bytes], port: int, want: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while _ready(port) != want:
        assert proc.poll() is None, f"service exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"/readyz never answered {want}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


@pytest.mark.parametrize("service", ["matching", "gateway", "simulator"])
def test_service_waits_for_the_broker(service: str, database_url: str, tmp_path: Path) -> None:
    broker_port = free_port()
    log = tmp_path / f"{service}.log"
    proc, port = _spawn(
        service,
        {"RIDEHAIL_DATABASE_URL": database_url, "RIDEHAIL_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}"},
        log,
    )
    broker = None
    try:
        _wait_status(proc, port, 503, 40, log)
        time.sleep(5)
        _wait_status(proc, port, 503, 5, log)  # still alive, still honest
        text = log.read_text()
        logged = text.count("broker_unreachable")
        assert logged >= 1, f"the outage is not logged at all:\n{text[-3000:]}"
        assert logged <= 6, "the outage is logged in a loop"
        broker = start_broker(port=broker_port)
        ensure_topics(f"127.0.0.1:{broker_port}")  # what `ridehail up` does after starting a broker
        _wait_status(proc, port, 200, 60, log)
    finally:
        proc.terminate()
        proc.wait(15)
        if broker is not None:
            stop_process(broker)


@pytest.mark.parametrize("service", ["auth", "matching", "gateway"])
def test_service_waits_for_postgres(service: str, database_url: str, broker: str, tmp_path: Path) -> None:
    switch = TcpSwitch(database_url)
    url = switch.database_url
    log = tmp_path / f"{service}.log"
    proc, port = _spawn(service, {"RIDEHAIL_DATABASE_URL": url, "RIDEHAIL_KAFKA_BOOTSTRAP": broker}, log)
    try:
        _wait_status(proc, port, 503, 40, log)
        time.sleep(3)
        _wait_status(proc, port, 503, 5, log)
        switch.up()
        _wait_status(proc, port, 200, 60, log)
        switch.down()  # and an outage while running
        _wait_status(proc, port, 503, 40, log)
        switch.up()
        _wait_status(proc, port, 200, 60, log)
    finally:
        proc.terminate()
        proc.wait(15)
        switch.down()
