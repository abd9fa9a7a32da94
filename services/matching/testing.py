"""Helpers shared by the matching tests and ``ridehail bench matching``: a private broker, a
throw-away database, an event collector, a ping generator and a local token signer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer

from ridehail.common.events import ALL_EVENT_TYPES, Event, EventDecoder, EventError
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.harness.scratch import free_port, private_broker, temporary_database  # noqa: F401 (re-exported)

asyncpg_dsn = to_asyncpg_dsn  # one conversion for the whole project (ridehail.common.postgres)


@dataclass
class Collected:
    event: Event | None
    raw: bytes
    headers: dict[str, bytes]
    received_at: float


@dataclass
class EventCollector:
    """Reads topics from the beginning in a background thread and keeps everything it saw."""

    bootstrap: str
    topics: list[str]
    items: list[Collected] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    on_event: Callable[[Collected], None] | None = None

    def start(self) -> EventCollector:
        self._thread = threading.Thread(target=self._run, daemon=True, name="collector")
        self._thread.start()
        return self

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"collector-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 5,
                "allow.auto.create.topics": False,
            }
        )
        consumer.subscribe(self.topics, on_assign=lambda *_: self._ready.set())
        decoder = EventDecoder(*ALL_EVENT_TYPES)
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.05)  # returns as soon as one message is there: no added latency
                if msg is None or msg.error() is not None:
                    continue
                if True:
                    raw = msg.value() or b""
                    try:
                        event: Event | None = decoder.decode(raw)
                    except EventError:
                        event = None
                    item = Collected(event, raw, dict(msg.headers() or []), time.time())
                    self.items.append(item)
                    if self.on_event is not None:
                        self.on_event(item)
        finally:
            consumer.close()

    def wait_ready(self, timeout_s: float = 20.0) -> bool:
        return self._ready.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def events(self, cls: type[Event] | None = None) -> list[Event]:
        return [i.event for i in list(self.items) if i.event is not None and (cls is None or isinstance(i.event, cls))]


@contextlib.asynccontextmanager
async def running_matching(settings: Any) -> AsyncIterator[Any]:
    """The matching service running in this event loop until the block ends (state loaded first)."""
    from ridehail.matching.main import MatchingService

    service = MatchingService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        assert await wait_until(lambda: service.started, 30), "matching did not start within 30 s"
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; returns the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        ok = await result if asyncio.iscoroutine(result) else result
        if ok or time.monotonic() > deadline:
            return bool(ok)
        await asyncio.sleep(0.05)


# -- tokens for local runs (the same format the auth service issues) ----------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalSigner:
    """An Ed25519 key pair that signs access tokens the shared TokenVerifier accepts."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = Ed25519PrivateKey.generate()
        self.kid = uuid.uuid4().hex[:12]
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwks: dict[str, Any] = {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": _b64(raw)}]
        }

    def token(self, sub: str, role: str = "rider", ttl_s: int = 3600) -> str:
        from ridehail.common.auth_tokens import AUDIENCE, ISSUER

        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "JWT", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "role": role,
            "typ": "access",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        signing_input = _b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))
        return signing_input + "." + _b64(self._key.sign(signing_input.encode()))

    def verifier(self) -> Any:
        from ridehail.common.auth_tokens import TokenVerifier

        v = TokenVerifier("http://127.0.0.1:9/.well-known/jwks.json")
        v.load_jwks(self.jwks)
        return v


@contextlib.asynccontextmanager
async def rides_app(database_url: str, signer: LocalSigner) -> AsyncIterator[Any]:
    """A minimal FastAPI app serving the rides router (what the gateway mounts), with its context."""
    from types import SimpleNamespace

    from fastapi import FastAPI

    from ridehail.common.db import make_engine, make_sessionmaker
    from ridehail.gateway.rides import router

    engine = make_engine(database_url)
    app = FastAPI()
    app.include_router(router)
    app.state.ctx = SimpleNamespace(session_factory=make_sessionmaker(engine), verifier=signer.verifier(), relay=None)
    try:
        yield app
    finally:
        await engine.dispose()


# -- matching as a child process (crash and scale-out tests) ---------------------------------------


def matching_process(
    bootstrap: str, database_url: str, port: int, log_path: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """Start ``ridehail serve matching`` with its settings in the environment."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(
        {
            "RIDEHAIL_KAFKA_BOOTSTRAP": bootstrap,
            "RIDEHAIL_DATABASE_URL": database_url,
            "RIDEHAIL_MATCHING_PORT": str(port),
            "RIDEHAIL_LOG_FORMAT": "json",
            "RIDEHAIL_MATCHING_ETA_MODEL": "straight_line",
        }
    )
    env.update({f"RIDEHAIL_{k.upper()}": v for k, v in settings.items()})
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "ridehail.cli", "serve", "matching"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def matching_stats(port: int) -> dict[str, Any] | None:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(f"http://127.0.0.1:{port}/stats")
            return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
