"""Simulator process: the fleet (pings + ride lifecycle), its ride-event consumer, the rider
generator, and /healthz /readyz /metrics on ``simulator_port``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ridehail.common.health import health_app, make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.service import ServiceRun, run_services
from ridehail.common.topics import wait_for_topics
from ridehail.domain.events import DriverLocation, encode
from ridehail.domain.roads import RoadGraph
from ridehail.simulator.fleet import Fleet
from ridehail.simulator.riders import RiderSimulator
from ridehail.simulator.runtime import FleetRunner, fleet_config_from, make_consumer
from ridehail.simulator.settings import SimulatorSettings
from ridehail.simulator.transport import RestPingSender

log = get_logger(__name__)


def tokens_from_file(path: str | None) -> Callable[[str], str] | None:
    """Driver tokens from a JSON object ``{driver_id: access token}`` (None without a file); a
    driver missing from it posts without a token (the edge answers 401)."""
    if path is None:
        return None
    import json
    from pathlib import Path

    tokens = json.loads(Path(path).read_text())
    if not isinstance(tokens, dict):
        raise ValueError(f"{path}: expected a JSON object of driver id -> token")
    return lambda driver_id: str(tokens.get(driver_id, ""))


class SimulatorService:
    """Everything the simulator runs; ``run(stop)`` until ``stop`` is set (or ``duration_s``)."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        serve_http: bool = True,
        consume: bool = True,
        instance: str = "simulator",
        driver_token: Callable[[str], str] | None = None,
        **fleet_overrides: Any,
    ) -> None:
        self.settings = settings
        # REST transports: the ingest edge takes a ping only with its driver's access token
        self.driver_token = driver_token or tokens_from_file(settings.simulator_driver_tokens_file)
        self.serve_http = serve_http
        self.consume = consume
        self.graph = RoadGraph.load(settings.road_graph)
        self.fleet = Fleet(self.graph, fleet_config_from(settings, **fleet_overrides))
        self.producer = EventProducer(settings.bootstrap, instance)
        self.dlq_producer = EventProducer(settings.bootstrap, f"{instance}-dlq")
        self.transport = settings.simulator_transport
        self.rest: RestPingSender | None = None
        if self.transport != "kafka":
            self.rest = RestPingSender(
                settings.ingest_url,
                concurrency=settings.simulator_http_connections,
                retry_s=settings.simulator_retry_s,
            )
        self.runner = FleetRunner(
            self.fleet,
            self.producer,
            time_scale=settings.time_scale,
            ping_sink=self._post_ping if self.rest is not None else None,
        )
        group = f"ridehail-simulator-{self.fleet.config.prefix.rstrip('-_.:') or 'drv'}"
        self.consumer, self.handler = make_consumer(
            settings.bootstrap,
            self.fleet,
            self.runner,
            self.dlq_producer,
            group,
            fetch_wait_ms=settings.simulator_ride_fetch_wait_ms,
        )
        self.riders = RiderSimulator(
            self.graph,
            settings.auth_url,
            settings.gateway_url,
            settings.riders_per_min,
            accounts=settings.rider_accounts,
            password=settings.rider_password,
            patience_s=settings.rider_patience_s,
            seed=self.fleet.seed,
        )
        self.started = False

    def _post_ping(self, ping: DriverLocation) -> None:
        assert self.rest is not None
        token = self.driver_token(ping.driver_id) if self.driver_token is not None else None
        self.rest.submit(encode(ping), token=token)

    def stats(self) -> dict[str, Any]:
        return {
            "drivers": len(self.fleet.drivers),
            "status": self.fleet.status_counts(),
            "pings": self.runner.stats.pings,
            "ride_events": self.runner.stats.events,
            "assignments_accepted": self.handler.accepted,
            "assignments_rejected": self.handler.rejected,
            "max_loop_lag_s": round(self.runner.stats.max_lag_s, 3),
            "rides_requested": self.riders.stats.accepted,
            "rides_cancelled_by_riders": self.riders.stats.cancelled,
            "seed": self.fleet.seed,
            "transport": self.transport,
            **({"rest": self.rest.stats.as_dict()} if self.rest is not None else {}),
        }

    def readiness(self) -> dict[str, bool]:
        checks = {
            "fleet_running": self.started,
            "producer_ok": self.producer.failed == 0 or self.producer.delivered > 0,
        }
        if self.consume:
            checks["ride_events_consumer"] = bool(self.consumer.stats.partitions)
        return checks

    def http_app(self) -> FastAPI:
        app = health_app("simulator", self.readiness)

        @app.get("/stats", summary="Fleet numbers: drivers by status, pings, assignments")
        async def stats() -> dict[str, Any]:
            return self.stats()

        return app

    async def run(self, stop: asyncio.Event, duration_s: float | None = None) -> None:
        tasks: list[asyncio.Task[Any]] = []
        server = None
        if self.serve_http:  # /readyz answers (503) while the broker is still unreachable
            server = make_server(self.http_app(), self.settings.host, self.settings.simulator_port)
            tasks.append(asyncio.create_task(server.serve(), name="http"))
        if not await wait_for_topics(self.settings.bootstrap, stop):
            if server is not None:
                server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        tasks.append(asyncio.create_task(self.runner.run(stop), name="fleet"))
        if self.rest is not None:
            tasks.append(asyncio.create_task(self.rest.run(stop), name="rest-pings"))
        if self.consume:
            tasks.append(asyncio.create_task(self.consumer.run(stop), name="ride-events"))
        if self.settings.riders_per_min > 0:
            tasks.append(asyncio.create_task(self.riders.run(stop), name="riders"))
        self.started = True
        log.info(
            "simulator_started",
            drivers=len(self.fleet.drivers),
            interval_s=self.fleet.config.interval,
            seed=self.fleet.seed,
            riders_per_min=self.settings.riders_per_min,
            transport=self.transport,
        )
        try:
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration_s)
                stop.set()
            else:
                await stop.wait()
        finally:
            stop.set()
            if server is not None:
                server.should_exit = True
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("task_failed", task=task.get_name(), error=repr(result))
            remaining = await asyncio.to_thread(self.producer.close, 10.0)
            await asyncio.to_thread(self.dlq_producer.close, 5.0)
            log.info("simulator_stopped", undelivered=remaining, **self.stats())


async def run(settings: SimulatorSettings, stop: asyncio.Event) -> None:
    await SimulatorService(settings).run(stop)


SERVICE = ServiceRun(
    "simulator", SimulatorSettings, run
)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
