"""Start broker, Postgres, migrations, topics and every service; watch them; stop them all.

Order: broker (unless RIDEHAIL_KAFKA_BOOTSTRAP is set: the embedded tansu, or with
RIDEHAIL_BROKER=kafka the local replicated Kafka cluster, started or reused) -> Postgres (RIDEHAIL_DATABASE_URL, else
127.0.0.1:5432, else embedded) -> migrations -> topics -> the services, one child process per
group of RIDEHAIL_SHARED_PROCESSES (by default auth+pricing+simulator, then matching, then gateway;
a group starts where its first service would in auth, matching, pricing, gateway, simulator).
A child that dies is reported loudly and restarted with backoff (at most 5 times a minute);
past that the whole stack stops with an error instead of flapping silently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ridehail.catalog import BY_NAME, SERVICES, STACK_ORDER, port_setting, process_groups
from ridehail.common.broker import broker_command, wait_for_port
from ridehail.common.local_postgres import LocalPostgres
from ridehail.common.ports import port_is_free
from ridehail.common.settings import CommonSettings
from ridehail.stack.children import Child, service_argv, stop_all

if TYPE_CHECKING:
    from ridehail.cluster.stack import ManagedCluster

SERVICE_ORDER = STACK_ORDER
STOP_TIMEOUT_S = 8.0
MAX_RESTARTS_PER_MINUTE = 5


class StackError(RuntimeError):
    """A start-up problem with one clear message for the user."""


@dataclass
class StackOptions:
    drivers: int | None = None
    services: tuple[str, ...] = SERVICE_ORDER
    ready_timeout_s: float = 90.0
    extra_env: dict[str, str] = field(default_factory=dict)


def http_port(settings: CommonSettings, service: str) -> int:
    return int(getattr(settings, BY_NAME[service].ports[0]))


def service_ports(settings: CommonSettings) -> dict[str, tuple[int, str]]:
    """Every port the stack's services bind (``gateway``, ``gateway-ws``, ...), with the setting that changes it."""
    out: dict[str, tuple[int, str]] = {}
    for service in SERVICES:
        if not service.in_stack:
            continue
        for i, port_field in enumerate(service.ports):
            suffix = port_field.removeprefix(service.name + "_").removesuffix("_port")
            name = service.name if i == 0 else f"{service.name}-{suffix}"
            out[name] = (int(getattr(settings, port_field)), port_setting(port_field))
    return out


def check_ports(settings: CommonSettings, services: tuple[str, ...], embedded_broker: bool) -> None:
    wanted: list[tuple[str, int, str]] = []
    for name, (port, env) in service_ports(settings).items():
        if name.split("-")[0] in services:
            wanted.append((name, port, env))
    if embedded_broker:
        wanted.append(("broker", settings.broker_port, "RIDEHAIL_BROKER_PORT"))
    seen: dict[int, str] = {}
    for name, port, env in wanted:
        if port in seen:
            raise StackError(f"{name} and {seen[port]} are both set to port {port}: change {env}")
        seen[port] = name
        if not port_is_free(settings.host, port):
            raise StackError(f"port {port} ({name}) on {settings.host} is busy: stop what uses it or set {env}")


class Stack:
    def __init__(self, settings: CommonSettings, options: StackOptions, console: Console | None = None) -> None:
        self.settings = settings
        self.options = options
        self.console = console or Console(stderr=False, highlight=False)
        self.children: list[Child] = []
        self.broker: Child | None = None
        self.cluster: ManagedCluster | None = None  # the local Kafka cluster (RIDEHAIL_BROKER=kafka)
        self.database_url = ""
        self.bootstrap = settings.bootstrap
        self._pg_handle: LocalPostgres | None = None
        self._stop = threading.Event()
        self.login_code: str | None = None

    def say(self, message: str) -> None:
        self.console.print(f"[bold]ridehail[/bold] {message}", highlight=False)

    # -- start ---------------------------------------------------------------------------------------
    def start(self) -> None:
        from ridehail.common.postgres import DatabaseUnavailable, resolve_database_url

        local_cluster = self.settings.kafka_bootstrap is None and _wants_local_cluster()
        embedded_broker = self.settings.kafka_bootstrap is None and not local_cluster
        check_ports(self.settings, self.options.services, embedded_broker)
        color = sys.stdout.isatty()
        if local_cluster:
            from ridehail.cluster.errors import ClusterError
            from ridehail.cluster.settings import ClusterSettings
            from ridehail.cluster.stack import ManagedCluster

            try:
                self.cluster = ManagedCluster.start_or_reuse(ClusterSettings(), self.say)
            except ClusterError as exc:
                raise StackError(str(exc)) from None
            self.bootstrap = self.cluster.bootstrap
        elif embedded_broker:
            self.say(f"starting the embedded broker (tansu, memory storage) on {self.bootstrap}")
            self.broker = Child(
                "broker",
                broker_command(self.settings.host, self.settings.broker_port),
                {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
            self.broker.start(sys.stdout, color)
            if not wait_for_port(self.settings.host, self.settings.broker_port, 15):
                raise StackError(f"the embedded broker did not open port {self.settings.broker_port}")
        else:
            self.say(f"using Kafka at {self.bootstrap}")
        try:
            self.database_url, self._pg_handle = resolve_database_url(self.settings)
        except DatabaseUnavailable as exc:
            raise StackError(str(exc)) from None
        self.say(f"Postgres: {_redact_url(self.database_url)}")
        self.say("migrating the database and creating the topics")
        env = self._child_env()
        prepared = self._prepare(env, login_code="auth" in self.options.services)
        if prepared.get("login_code_error"):
            self.say(f"[yellow]could not create a demo login link: {prepared['login_code_error']}[/yellow]")
        self.login_code = prepared.get("login_code")
        for group in process_groups(self.settings.shared_processes, self.options.services):
            name = "+".join(group)  # one process for the group: ``python -m ridehail.serve auth+pricing``
            child = Child(name, service_argv(name), env)
            child.start(sys.stdout, color)
            self.children.append(child)
        self._wait_ready()

    def _prepare(self, env: dict[str, str], login_code: bool = False, topics_only: bool = False) -> dict[str, str]:
        """Migrations, topics (and the demo login code) in a one-shot child: see ``stack.prepare``."""
        argv = [sys.executable, "-m", "ridehail.stack.prepare"]
        argv += ["--login-code"] if login_code else []
        argv += ["--topics-only"] if topics_only else []
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=False)  # stderr: the console
        if done.returncode != 0:
            raise StackError(
                f"preparing the database and topics failed (exit code {done.returncode}; the reason is above)"
            )
        lines = done.stdout.strip().splitlines()
        try:
            result: dict[str, str] = json.loads(lines[-1]) if lines else {}
        except ValueError:
            raise StackError(f"preparing the database and topics printed no result: {lines[-1][:200]!r}") from None
        return result

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ.items())
        env["RIDEHAIL_DATABASE_URL"] = self.database_url
        env["RIDEHAIL_KAFKA_BOOTSTRAP"] = self.bootstrap
        env["PYTHONUNBUFFERED"] = "1"
        # The gateway proxies browsers' /auth/* calls: let auth believe its X-Forwarded-For, so the
        # per-address login limit counts browsers, not the gateway.
        gateway_address = "127.0.0.1" if self.settings.host == "0.0.0.0" else self.settings.host
        env.setdefault("RIDEHAIL_TRUSTED_PROXIES", gateway_address)
        if self.options.drivers is not None:
            env["RIDEHAIL_DRIVERS"] = str(self.options.drivers)
        env.update(self.options.extra_env)
        return env

    def health_urls(self) -> dict[str, str]:
        s = self.settings
        return {name: f"http://{s.host}:{http_port(s, name)}/readyz" for name in self.options.services}

    def _wait_ready(self) -> None:
        pending = dict(self.health_urls())
        deadline = time.monotonic() + self.options.ready_timeout_s
        while pending:
            for name, url in list(pending.items()):
                child = next(c for c in self.children if name in c.name.split("+"))
                code = child.exit_code()
                if code is not None:
                    raise StackError(f"{child.name} exited with code {code} during start-up (its log is above)")
                if _answers_200(url):
                    self.say(f"{name} is ready")
                    del pending[name]
            if time.monotonic() > deadline:
                raise StackError(f"not ready after {self.options.ready_timeout_s:.0f}s: {', '.join(pending)}")
            time.sleep(0.25)

    # -- report --------------------------------------------------------------------------------------
    def urls(self) -> list[tuple[str, str]]:
        s = self.settings
        host = s.public_host
        rows: list[tuple[str, str]] = []
        if "gateway" in self.options.services:
            map_url = f"http://{host}:{s.gateway_port}/"
            if self.login_code:
                rows.append(("Map (logged in as demo viewer)", f"{map_url}?login={self.login_code}"))
            rows.append(("Map", map_url))
            rows.append(("Live feed (websocket)", f"ws://{host}:{s.gateway_ws_port}/ws"))
            rows.append(("Ride API", f"http://{host}:{s.gateway_port}/docs"))
        if "auth" in self.options.services:
            rows.append(("Auth API (OpenAPI)", f"http://{host}:{s.auth_port}/docs"))
        for name in self.options.services:
            rows.append((f"{name} metrics", f"http://{host}:{http_port(s, name)}/metrics"))
        rows.append(("Kafka bootstrap", self.bootstrap))
        rows.append(("Postgres", _redact_url(self.database_url)))
        return rows

    def print_urls(self) -> None:
        table = Table(title="ridehail is running (Ctrl-C stops everything)", show_lines=False)
        table.add_column("What")
        table.add_column("Where", overflow="fold")
        for what, where in self.urls():
            table.add_row(what, where)
        self.console.print(table)

    # -- supervise -----------------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def supervise(self) -> int:
        """Restart dead children with backoff until asked to stop; return the exit code."""
        color = sys.stdout.isatty()
        while not self._stop.wait(0.5):
            if self.cluster is not None and not self.cluster.tick():
                return 1
            for child in [*self.children, *([self.broker] if self.broker else [])]:
                code = child.exit_code()
                if code is None or child.stopping:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60]
                if len(child.restarts) >= MAX_RESTARTS_PER_MINUTE:
                    self.say(
                        f"[bold red]{child.name} died {len(child.restarts) + 1} times within a minute "
                        f"(last exit code {code}): stopping the stack[/bold red]"
                    )
                    return 1
                child.restarts.append(now)
                self.say(f"[bold red]{child.name} exited with code {code}: restarting it[/bold red]")
                child.start(sys.stdout, color)
                if child is self.broker:
                    self._after_broker_restart()
        return 0

    def _after_broker_restart(self) -> None:
        self.say("[yellow]the embedded broker restarted and forgot everything (memory storage)[/yellow]")
        if wait_for_port(self.settings.host, self.settings.broker_port, 15):
            try:
                self._prepare(self._child_env(), topics_only=True)
            except StackError as exc:
                self.say(f"[bold red]{exc}[/bold red]")

    def stop(self) -> None:
        stop_all(self.children, STOP_TIMEOUT_S, self.say)
        if self.broker is not None:
            stop_all([self.broker], 2.0, self.say)
        if self.cluster is not None:
            self.cluster.stop()
        if self._pg_handle is not None:
            try:
                self._pg_handle.stop()
            except Exception as exc:
                self.say(f"[yellow]embedded Postgres did not stop cleanly: {exc}[/yellow]")
            self._pg_handle = None


def _wants_local_cluster() -> bool:
    from ridehail.cluster.settings import wants_local_cluster

    return wants_local_cluster()


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _redact_url(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}//{user}:***@{host}"
    return url


def run_stack(settings: CommonSettings, options: StackOptions) -> int:
    stack = Stack(settings, options)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stack.request_stop)
    started = time.monotonic()
    try:
        stack.start()
        stack.print_urls()
        stack.say(f"up in {time.monotonic() - started:.1f}s")
        code = stack.supervise()
    except StackError as exc:
        stack.console.print(f"[bold red]ridehail up failed:[/bold red] {exc}")
        code = 2
    except KeyboardInterrupt:
        code = 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean stop
        t0 = time.monotonic()
        stack.stop()
        stack.say(f"stopped in {time.monotonic() - t0:.1f}s")
    return code
