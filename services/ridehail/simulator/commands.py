"""CLI commands of the simulator: ``ridehail simulate`` and ``ridehail bench simulator``."""

from __future__ import annotations

import json
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        drivers: int = typer.Option(None, "--drivers", "-n", help="Fleet size (default RIDEHAIL_DRIVERS, 200)."),
        interval: float = typer.Option(None, "--interval", help="Seconds between pings of one driver (default 1)."),
        seed: int = typer.Option(None, "--seed", help="Random seed for a reproducible run."),
        duration: float = typer.Option(None, "--duration", help="Stop after this many seconds (default: Ctrl-C)."),
        bootstrap: str = typer.Option(
            None, "--bootstrap", help="Kafka bootstrap servers (default RIDEHAIL_KAFKA_BOOTSTRAP)."
        ),
        riders_per_min: float = typer.Option(
            None, "--riders-per-min", help="Ride requests per minute through the REST API (default 0)."
        ),
        prefix: str = typer.Option(None, "--prefix", help="Driver id prefix (default drv-)."),
        speedup: float = typer.Option(None, "--speedup", help="Simulated seconds per real second (default 1)."),
        transport: str = typer.Option(
            None,
            "--transport",
            help="kafka (produce to the broker), rest or rest-kafka (POST to the ingest edge). "
            "Default RIDEHAIL_SIMULATOR_TRANSPORT, kafka.",
        ),
        ingest_url: str = typer.Option(
            None, "--ingest-url", help="REST transports: ping endpoint (default http://HOST:8005/ingest/ping)."
        ),
    ) -> None:
        """Drive a fleet on Gothenburg's streets against any Kafka broker (no HTTP server)."""
        import asyncio
        import signal

        from ridehail.common.logging import configure_logging
        from ridehail.common.settings import load_settings
        from ridehail.simulator.main import SimulatorService
        from ridehail.simulator.settings import SimulatorSettings

        overrides: dict[str, Any] = {
            k: v
            for k, v in {
                "drivers": drivers,
                "interval": interval,
                "seed": seed,
                "kafka_bootstrap": bootstrap,
                "riders_per_min": riders_per_min,
                "driver_prefix": prefix,
                "time_scale": speedup,
                "simulator_transport": transport,
                "simulator_ingest_url": ingest_url,
            }.items()
            if v is not None
        }
        settings = load_settings(SimulatorSettings, **overrides)
        configure_logging(settings.log_level, settings.log_format, service="simulator")

        async def main() -> dict[str, Any]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            service = SimulatorService(settings, serve_http=False)
            await service.run(stop, duration_s=duration)
            return service.stats()

        stats = asyncio.run(main())
        typer.echo(json.dumps(stats, indent=2))
