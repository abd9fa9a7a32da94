"""Gateway commands for the ``ridehail`` CLI: ``ridehail bench gateway``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:  # noqa: ARG001 - the service has no top-level command
    @bench.command("gateway")
    def bench_gateway(
        drivers: int = typer.Option(10_000, min=1, help="Cars pinging once per second."),
        clients: int = typer.Option(100, min=1, help="Websocket clients watching the whole city."),
        seconds: float = typer.Option(20.0, min=2, help="Steady-state measurement time."),
        slow_seconds: float = typer.Option(60.0, min=2, help="How long a never-reading client stays connected."),
        raw_seconds: float = typer.Option(8.0, min=1, help="Plain websockets.broadcast comparison time."),
        bootstrap: str = typer.Option(None, help="Kafka bootstrap (default: a fresh embedded broker)."),
        json_path: Path = typer.Option(Path("docs/bench/gateway.json"), "--json", help="Where to write results."),
    ) -> None:
        """Live feed: ping -> websocket e2e latency, deliveries, slow-client impact, raw broadcast."""
        from ridehail.gateway.bench import run_bench, write_json

        result = run_bench(drivers, clients, seconds, slow_seconds, raw_seconds, bootstrap)
        write_json(json_path, result)
        for key, value in result.items():
            typer.echo(f"{key:40} {value}")
        typer.echo(f"written to {json_path}")
