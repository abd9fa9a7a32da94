"""CLI commands of matching: ``ridehail bench matching``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    del app

    @bench.command("matching")
    def bench_matching(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = typer.Option(
            None,
            "--admin-url",
            help="Postgres where a throw-away database may be created (dropped afterwards). Default: "
            "SCRATCH_POSTGRES_URL, RIDEHAIL_DATABASE_URL's server, 127.0.0.1:5432, else a throw-away local server.",
        ),
        ingest_drivers: int = typer.Option(10_000, help="Drivers in the ingest phase."),
        ingest_rate: float = typer.Option(60_000, help="Offered pings per second in the ingest phase."),
        ingest_seconds: float = typer.Option(10.0, help="Length of the ingest phase."),
        assign_drivers: int = typer.Option(1000, help="Available drivers in the assignment phase."),
        assign_rps: float = typer.Option(20.0, help="Ride requests per second (REST) in the assignment phase."),
        assign_seconds: float = typer.Option(15.0, help="Length of the assignment phase."),
        phase: list[str] = typer.Option(
            ["ingest", "drain", "assign", "solver", "compare"], "--phase", help="Phases to run (repeatable)."
        ),
    ) -> None:
        """Ingest rate, REST-to-assigned latency, batched solver time, greedy vs batched pickup ETA,
        lost and double-assigned (targets: >= 50k pings/s, p99 <= 50 ms, solve <= 100 ms, 0, 0)."""
        from ridehail.common.logging import configure_logging
        from ridehail.matching.bench import run_bench

        configure_logging("WARNING")
        result = run_bench(
            json_path,
            admin_url,
            ingest_drivers=ingest_drivers,
            ingest_rate=ingest_rate,
            ingest_seconds=ingest_seconds,
            assign_drivers=assign_drivers,
            assign_rps=assign_rps,
            assign_seconds=assign_seconds,
            phases=tuple(phase),
        )
        typer.echo(json.dumps(result, indent=2))
        if json_path:
            typer.echo(f"written to {json_path}")

    @bench.command("offers")
    def bench_offers(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = typer.Option(
            None,
            "--admin-url",
            help="Postgres where a throw-away database may be created (dropped afterwards). Default: "
            "SCRATCH_POSTGRES_URL, RIDEHAIL_DATABASE_URL's server, 127.0.0.1:5432, else a throw-away local server.",
        ),
        drivers: int = typer.Option(300, help="Simulated drivers (answering offers)."),
        requests: int = typer.Option(150, help="Ride requests."),
        rps: float = typer.Option(5.0, help="Ride requests per second."),
        accept_probability: float = typer.Option(0.9, help="Probability that a free driver accepts."),
        offer_timeout_s: float = typer.Option(5.0, help="Matching's offer timeout."),
    ) -> None:
        """Driver offers end to end: acceptance rate, answer latency, request-to-assigned latency,
        offers per ride, double bookings (must be 0)."""
        from ridehail.common.logging import configure_logging
        from ridehail.matching.offers_bench import run_offers_bench

        configure_logging("WARNING")
        result = run_offers_bench(
            json_path,
            admin_url,
            drivers=drivers,
            requests=requests,
            rps=rps,
            accept_probability=accept_probability,
            offer_timeout_s=offer_timeout_s,
        )
        typer.echo(json.dumps(result, indent=2))
        if json_path:
            typer.echo(f"written to {json_path}")
