"""The Kafka side of ``ridehail bench reply``: a responder process that consumes one bench-only
request topic and answers on the requester's reply topic, doing the same work as the REST route.

``login``: :func:`ridehail.auth.grants.password_grant` on an :class:`~ridehail.auth.state.AuthState`
built as the auth service builds it (same settings from the environment, same hash gate, same
throttles, same token issuer, same session insert). ``ride``: the body validated by the gateway's
``RideRequestBody``, the rider token verified offline against the JWKS (``RIDEHAIL_AUTH_BASE_URL``),
the gateway's per-rider rate limit and surge lookup on a
:class:`~ridehail.gateway.context.GatewayContext`, then :func:`ridehail.gateway.ride_requests.create_ride`
(ride row + history + outbox row in one transaction), with an outbox relay publishing it, as
the gateway process does.

Run: ``python -m ridehail.bench.experiments.reply_responder --operation login --bootstrap HOST:PORT
--ready-file PATH`` (the database from ``RIDEHAIL_DATABASE_URL``). The ready file is written once
the consumer has its partitions; SIGTERM finishes the requests in hand, commits, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from ridehail.bench.experiments.reply_correlation import HEADER_CORRELATION, HEADER_REPLY_TO, request_topic
from ridehail.common.kafka import EventProducer, consumer_config, message_headers

Handler = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
REQUESTER_ADDRESS = "kafka-requester"  # the throttles' client address (REST: 127.0.0.1)


def _status_of(exc: Exception) -> int:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return 500


async def login_handler() -> tuple[Handler, Callable[[], Awaitable[None]]]:
    import asyncpg

    from ridehail.auth.grants import GrantRefused, password_grant
    from ridehail.auth.settings import AuthSettings
    from ridehail.auth.state import AuthState
    from ridehail.auth.tokens import ANONYMOUS_CLIENT
    from ridehail.common.db import make_engine, make_sessionmaker, wait_for_database
    from ridehail.common.postgres import to_asyncpg_dsn

    settings = AuthSettings()
    if not settings.database_url:
        raise SystemExit("RIDEHAIL_DATABASE_URL must be set")
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    await wait_for_database(engine)
    read_pool = await asyncpg.create_pool(
        to_asyncpg_dsn(settings.database_url), min_size=1, max_size=settings.db_pool_size
    )
    state = await AuthState.start(settings, engine, make_sessionmaker(engine), read_pool)

    async def handle(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            pair = await password_grant(
                state, REQUESTER_ADDRESS, str(body.get("username", "")), str(body.get("password", "")), ANONYMOUS_CLIENT
            )
        except GrantRefused as exc:
            return 400, {"error": "invalid_grant", "error_description": exc.reason}
        except Exception as exc:  # throttles and the hash gate answer 429 / 503 on REST
            return _status_of(exc), {"error": type(exc).__name__}
        return 200, {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "token_type": "Bearer",
        }

    async def close() -> None:
        await state.close()
        await read_pool.close()
        await engine.dispose()

    return handle, close


async def ride_handler(bootstrap: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    from pydantic import ValidationError

    from ridehail.common.auth_tokens import InvalidToken, TokenVerifier
    from ridehail.common.db import make_engine, make_sessionmaker, wait_for_database
    from ridehail.common.outbox import OutboxRelay
    from ridehail.domain.events import LatLon
    from ridehail.domain.lifecycle import INITIAL_STATUS
    from ridehail.gateway.context import GatewayContext
    from ridehail.gateway.ride_requests import create_ride
    from ridehail.gateway.schemas import RideRequestBody
    from ridehail.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    if not settings.database_url:
        raise SystemExit("RIDEHAIL_DATABASE_URL must be set")
    engine = make_engine(settings.database_url)
    await wait_for_database(engine)
    sessions = make_sessionmaker(engine)
    verifier = TokenVerifier(settings.auth_url + "/.well-known/jwks.json")
    producer = EventProducer(bootstrap, "reply-responder-ride-relay")
    ctx = GatewayContext(settings=settings, session_factory=sessions, verifier=verifier, producer=producer)
    relay = OutboxRelay(sessions, producer, name="reply-responder")
    ctx.relay = relay
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))

    async def handle(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            principal = await verifier.verify(str(body.get("token", "")))
        except InvalidToken as exc:
            return 401, {"detail": exc.reason}
        if principal.role != "rider":
            return 403, {"detail": "riders only"}
        try:
            req = RideRequestBody.model_validate(body.get("ride", {}))
            ctx.ride_request_allowed(principal.sub)
            _, surge = ctx.surge_at(req.pickup.lat, req.pickup.lon)
            ride_id = await create_ride(
                sessions,
                principal.sub,
                LatLon(req.pickup.lat, req.pickup.lon),
                LatLon(req.dropoff.lat, req.dropoff.lon),
                quote_id=req.quote_id,
                surge_multiplier=surge,
            )
        except ValidationError:
            return 422, {"detail": "invalid ride request"}
        except Exception as exc:  # domain errors carry their HTTP status
            return _status_of(exc), {"detail": str(exc)[:200]}
        ctx.wake_relay()
        return 202, {"ride_id": ride_id, "status": INITIAL_STATUS}

    async def close() -> None:
        stop.set()
        relay.wake()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay_task, 5)
        await asyncio.to_thread(producer.close, 5.0)
        await engine.dispose()

    return handle, close


async def serve(operation: str, bootstrap: str, ready_file: Path, concurrency: int) -> None:
    handle, close = await (login_handler() if operation == "login" else ride_handler(bootstrap))
    replies = EventProducer(bootstrap, f"reply-responder-{operation}", **{"linger.ms": 0})
    consumer = Consumer(
        consumer_config(
            bootstrap,
            f"bench-reply-responder-{operation}",
            f"reply-responder-{operation}",
            **{"fetch.wait.max.ms": 5, "enable.auto.offset.store": True},
        )
    )

    def assigned(_consumer: Consumer, parts: list[TopicPartition]) -> None:
        if parts:
            ready_file.write_text(str(len(parts)))

    consumer.subscribe([request_topic(operation)], on_assign=assigned)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(msg: Message) -> None:
        try:
            headers = dict(message_headers(msg))
            correlation = headers.get(HEADER_CORRELATION) or b""
            reply_to = (headers.get(HEADER_REPLY_TO) or b"").decode()
            try:
                body = json.loads(msg.value() or b"{}")
                status, payload = await handle(body if isinstance(body, dict) else {})
            except ValueError:
                status, payload = 400, {"detail": "request is not JSON"}
            if reply_to:
                replies.produce(
                    reply_to,
                    json.dumps({"status": status, "body": payload}).encode(),
                    msg.key(),
                    headers=[(HEADER_CORRELATION, correlation)],
                )
        finally:
            slots.release()

    try:
        while not stop.is_set():
            batch = await asyncio.to_thread(consumer.consume, 64, 0.05)
            for msg in batch:
                if msg.error():
                    continue
                await slots.acquire()  # at most ``concurrency`` requests in hand, like a server's limit
                task = asyncio.create_task(answer(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
    finally:
        await asyncio.to_thread(replies.close, 5.0)
        await asyncio.to_thread(consumer.close)  # commits what was consumed
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--operation", choices=("login", "ride"), required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=64, help="Requests in hand at once.")
    args = parser.parse_args()
    from ridehail.common.logging import configure_logging

    configure_logging("WARNING")
    try:
        import uvloop

        uvloop.run(serve(args.operation, args.bootstrap, args.ready_file, args.concurrency))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(args.operation, args.bootstrap, args.ready_file, args.concurrency))


if __name__ == "__main__":
    main()
