"""The processes of ``ridehail bench reply``: a private Postgres and tansu broker, the real auth
service and gateway (the REST responders), and one Kafka responder process per operation
(:mod:`ridehail.bench.experiments.reply_responder`), all as subprocesses that can be stopped
and started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ridehail.bench.experiments.infra import (
    PrivateBroker,
    PrivatePostgres,
    ServiceProcess,
    http_get,
    remove_tree,
    temp_root,
    tree_pids,
)
from ridehail.bench.experiments.reply_correlation import reply_topic, request_topic
from ridehail.common.broker import stop_process
from ridehail.common.ports import free_port
from ridehail.domain.topics import TopicSpec
from ridehail.harness.tokens import LocalSigner, serving_jwks

OPERATIONS = ("login", "ride")
PASSWORD = "reply-bench-password-not-common"
# Every login is the only login in flight of its account (the auth service refuses a second one).
USERS = 400


def bench_topics(requester: str) -> list[TopicSpec]:
    """Bench-only topics (the production registry in ridehail.domain.topics is left alone)."""
    specs = [TopicSpec(request_topic(op), 1, "requester", f"reply bench: {op} requests") for op in OPERATIONS]
    specs.append(TopicSpec(reply_topic(requester), 1, "requester", "reply bench: this requester's replies"))
    return specs


class ResponderProcess:
    """``python -m ridehail.bench.experiments.reply_responder`` for one operation; ready once its
    consumer has the request topic's partition."""

    def __init__(self, operation: str, bootstrap: str, env: dict[str, str], root: Path) -> None:
        self.name = f"kafka-responder-{operation}"
        self.operation = operation
        self.bootstrap = bootstrap
        self.env = env
        self.root = root
        self.log_file = root / f"{self.name}.log"
        self.ready_file = root / f"{self.name}.ready"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        self.ready_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
        env.update({"RIDEHAIL_LOG_LEVEL": "WARNING", **self.env})
        out = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        cmd = [sys.executable, "-m", "ridehail.bench.experiments.reply_responder", "--operation", self.operation]
        cmd += ["--bootstrap", self.bootstrap, "--ready-file", str(self.ready_file)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_file}")
            if self.ready_file.exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} got no partition within {timeout_s}s; see {self.log_file}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=20)
            self.proc = None

    close = stop

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []


class RestService(ServiceProcess):
    """A service that is only back once ``/readyz`` says so (healthz answers before the database)."""

    def start(self, timeout_s: float = 60.0) -> None:
        super().start(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if http_get(self.base_url + "/readyz", 1.0)[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout_s}s; see {self.log_file}")


@dataclass
class ReplyEnvironment:
    root: Path
    postgres: PrivatePostgres
    broker: PrivateBroker
    signer: LocalSigner
    requester: str
    rest: dict[str, RestService] = field(default_factory=dict)  # operation -> auth / gateway
    kafka: dict[str, ResponderProcess] = field(default_factory=dict)  # operation -> responder
    users: list[str] = field(default_factory=list)

    def responder(self, path: str, operation: str) -> Any:
        return (self.rest if path == "rest" else self.kafka)[operation]

    def components(self) -> dict[str, Any]:
        out: dict[str, Any] = {"postgres": self.postgres, "broker": self.broker}
        out.update({f"rest-{op}[{s.service}]": s for op, s in self.rest.items()})
        out.update({s.name: s for s in self.kafka.values()})
        return out

    def base_urls(self) -> dict[str, str]:
        return {op: s.base_url for op, s in self.rest.items()}


async def _seed_users(dsn: str, count: int, password_hash: str) -> list[str]:
    import asyncpg

    emails = [f"reply-{i:04d}-{uuid.uuid4().hex[:6]}@example.com" for i in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, 'rider')",
            [(uuid.uuid4(), e, password_hash) for e in emails],
        )
    finally:
        await conn.close()
    return emails


def password_hash_cost_ms(samples: int = 7) -> dict[str, Any]:
    """One Argon2id verification with the auth service's default parameters, timed here."""
    from ridehail.auth.passwords import PasswordHasher
    from ridehail.auth.settings import AuthSettings

    s = AuthSettings(database_url="postgresql://unused/x")
    hasher = PasswordHasher(s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism)
    stored = hasher.hash(PASSWORD)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        hasher.verify(PASSWORD, stored)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "verify_ms_median": round(times[len(times) // 2], 2),
        "verify_ms_min": round(times[0], 2),
        "argon2": {
            "memory_kib": s.argon2_memory_kib,
            "time_cost": s.argon2_time_cost,
            "parallelism": s.argon2_parallelism,
        },
        "hash_concurrency": s.password_hash_concurrency,
        "stored_hash": stored,
    }


@contextlib.contextmanager
def reply_environment(operations: tuple[str, ...], stored_hash: str) -> Iterator[ReplyEnvironment]:
    from ridehail.common.topics import ensure_topics

    root = temp_root("ridehail-reply-")
    signer = LocalSigner()
    env = ReplyEnvironment(root, PrivatePostgres(root), PrivateBroker(root), signer, uuid.uuid4().hex[:10])
    started: list[Any] = []
    jwks = contextlib.ExitStack()
    try:
        jwks_url = jwks.enter_context(serving_jwks(signer))
        env.postgres.start()
        started.append(env.postgres)
        env.broker.start()
        started.append(env.broker)
        ensure_topics(env.broker.bootstrap, bench_topics(env.requester), quiet=True)
        env.users = asyncio.run(_seed_users(env.postgres.dsn, USERS, stored_hash))
        common = {"RIDEHAIL_DATABASE_URL": env.postgres.url, "RIDEHAIL_KAFKA_BOOTSTRAP": env.broker.bootstrap}
        settings = {
            "login": {"RIDEHAIL_IP_ATTEMPTS_PER_MINUTE": "1000000"},
            "ride": {"RIDEHAIL_AUTH_BASE_URL": jwks_url},
        }
        pending: list[RestService | ResponderProcess] = []
        for op in operations:
            port = free_port()
            service = "auth" if op == "login" else "gateway"
            port_env = {"RIDEHAIL_AUTH_PORT": str(port)}
            if op == "ride":
                port_env = {"RIDEHAIL_GATEWAY_PORT": str(port), "RIDEHAIL_GATEWAY_WS_PORT": str(free_port())}
            env.rest[op] = RestService(f"rest-{service}", service, {**common, **settings[op], **port_env}, port, root)
            env.kafka[op] = ResponderProcess(op, env.broker.bootstrap, {**common, **settings[op]}, root)
            pending += [env.rest[op], env.kafka[op]]
        started += pending  # closed on the way out whether or not they came up
        # started side by side: on a busy machine each Python start-up takes seconds
        with ThreadPoolExecutor(len(pending)) as pool:
            for future in [pool.submit(comp.start) for comp in pending]:
                future.result()
        yield env
    finally:
        for comp in reversed(started):
            with contextlib.suppress(Exception):
                comp.close()
        jwks.close()
        remove_tree(root)
