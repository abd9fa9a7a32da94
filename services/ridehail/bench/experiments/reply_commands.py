"""``ridehail bench reply`` (registered from :mod:`ridehail.bench.experiments.commands`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register_reply(bench: typer.Typer) -> None:
    @bench.command("reply")
    def bench_reply(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (latency, CPU, responder down) here."),
        repeats: int = typer.Option(5, "--repeats", min=1, help="Runs per path and operation, interleaved."),
        rate: float = typer.Option(5.0, "--rate", help="Requests per second offered on each path (open loop)."),
        seconds: float = typer.Option(6.0, "--seconds", help="Measured window per run."),
        warmup: float = typer.Option(1.0, "--warmup", help="Seconds of load before each window (not counted)."),
        timeout: float = typer.Option(2.0, "--timeout", help="The caller gives up this long after a request was due."),
        concurrency: int = typer.Option(32, "--concurrency", min=1, help="Requests in flight per path at most."),
        outage_seconds: float = typer.Option(3.0, "--outage-seconds", help="How long the login responder stays down."),
        after_seconds: float = typer.Option(3.0, "--after-seconds", help="Load after the responder is back."),
        operations: str = typer.Option("login,ride", "--operations", help="Which operations to measure."),
        seed: int = typer.Option(1, "--seed", help="Seed of the interleaved order and the request bodies."),
    ) -> None:
        """REST vs Kafka request/reply (correlation id, reply topic) for login and ride request: p50/p99
        at equal offered load, and what the caller sees while the responder is down."""
        from ridehail.bench.experiments.reply_bench import run_reply_bench
        from ridehail.bench.experiments.report_reply import plot_reply, reply_table
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        try:
            result = run_reply_bench(
                repeats=repeats,
                rate=rate,
                seconds=seconds,
                warmup=warmup,
                timeout=timeout,
                concurrency=concurrency,
                outage_seconds=outage_seconds,
                after_seconds=after_seconds,
                operations=tuple(o.strip() for o in operations.split(",") if o.strip()),
                seed=seed,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        reply_table(result)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
            typer.echo(f"written to {json_path}")
        if plot is not None:
            plot_reply(result, plot)
            typer.echo(f"plot written to {plot}")
