"""CLI commands of pricing: ``ridehail bench pricing``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    del app

    @bench.command("pricing")
    def bench_pricing(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = typer.Option(
            None,
            "--admin-url",
            help="Postgres where a throw-away database may be created (dropped afterwards). Default: "
            "SCRATCH_POSTGRES_URL, RIDEHAIL_DATABASE_URL's server, 127.0.0.1:5432, else a throw-away local server.",
        ),
        drivers: int = typer.Option(10_000, help="Drivers sending pings in the consume phase."),
        pings_per_driver: int = typer.Option(20, help="Pings per driver in the consume phase."),
        requests: int = typer.Option(5_000, help="Ride requests in the consume phase."),
        clients: int = typer.Option(64, help="Concurrent quote clients."),
        seconds: float = typer.Option(15.0, help="Length of the quote phase (after a 2 s warm-up)."),
        phase: list[str] = typer.Option(["consume", "quotes"], "--phase", help="Phases to run (repeatable)."),
    ) -> None:
        """Surge events/s through the pricing consumer, whole-city recompute time, quote latency under
        concurrent clients against a real gateway (targets: >= 50,000 events/s, quote p99 <= 50 ms)."""
        from ridehail.common.logging import configure_logging
        from ridehail.pricing.bench import run_bench

        configure_logging("WARNING")
        result = run_bench(
            json_path,
            admin_url,
            drivers=drivers,
            pings_per_driver=pings_per_driver,
            requests=requests,
            clients=clients,
            seconds=seconds,
            phases=tuple(phase),
        )
        typer.echo(json.dumps(result, indent=2))
        if json_path:
            typer.echo(f"written to {json_path}")
