"""``ridehail bench ingest``, ``ridehail bench outage`` and ``ridehail bench experiments``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _write(result: dict, json_path: Path | None) -> None:  # type: ignore[type-arg]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(f"written to {json_path}")


def register(bench: typer.Typer) -> None:
    from ridehail.bench.experiments.reply_commands import register_reply

    register_reply(bench)  # ``bench reply``: its options live in its own module

    @bench.command("ingest")
    def bench_ingest(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (throughput, latency, CPU) here."),
        steps: str = typer.Option(
            "500,1000,2000,5000,10000,20000,50000", "--steps", help="Fleet sizes at 1 Hz (pings offered per second)."
        ),
        paths: str = typer.Option(
            "kafka,rest,rest-kafka,rest-kafka-enqueue", "--paths", help="Which ingestion paths to measure."
        ),
        seconds: float = typer.Option(8.0, "--seconds", help="Measured window per step and path."),
        warmup: float = typer.Option(2.0, "--warmup", help="Seconds of load before each window."),
        connections: int = typer.Option(128, "--connections", help="HTTP keep-alive connections of the client."),
        rest_db_pool: int = typer.Option(64, "--rest-db-pool", help="Postgres connections of the rest edge."),
    ) -> None:
        """REST vs events for the same pings: throughput, latency, CPU, ping-to-row time per fleet size."""
        from ridehail.bench.experiments.ingest_bench import run_ingest_bench
        from ridehail.bench.experiments.report import ingest_table, plot_ingest
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        try:
            step_list = tuple(int(s) for s in steps.split(",") if s.strip())
        except ValueError:
            raise typer.BadParameter(f"--steps must be comma-separated integers, got {steps!r}") from None
        path_list = tuple(p.strip() for p in paths.split(",") if p.strip())
        try:
            result = run_ingest_bench(step_list, path_list, seconds, warmup, connections, rest_db_pool)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        ingest_table(result)
        _write(result, json_path)
        if plot is not None:
            plot_ingest(result, plot)
            typer.echo(f"plot written to {plot}")

    @bench.command("outage")
    def bench_outage(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (backlog over time) here."),
        outage_seconds: float = typer.Option(30.0, "--outage-seconds", help="How long each component stays down."),
        rate: float = typer.Option(300.0, "--rate", help="Pings per second offered on each path."),
        scenarios: str = typer.Option(
            None,
            "--scenarios",
            help="What to stop. --broker tansu: consumer, postgres, broker (default: all three). --broker kafka: "
            "broker-1-of-3, broker-2-of-3, partition-1-of-3, cluster-restart (default: all four).",
        ),
        broker: str = typer.Option(
            "tansu",
            "--broker",
            help="tansu: the embedded broker (in memory, one node); kafka: a local 3-node Apache Kafka cluster "
            "(RF 3, min.insync.replicas=2; needs Java 17 + Maven; the partition scenario needs root).",
        ),
        paths: str = typer.Option(
            "kafka,rest,rest-kafka,rest-kafka-enqueue", "--paths", help="Which ingestion paths to load at once."
        ),
        retry_seconds: float = typer.Option(
            10.0, "--retry-seconds", help="REST clients retry a ping on 503/connection errors until it is this old."
        ),
    ) -> None:
        """Stop matching, Postgres or the broker (tansu), or break the Kafka cluster, under load: lost, stall."""
        from ridehail.bench.experiments.outage_bench import run_outage_bench
        from ridehail.bench.experiments.report import outage_table, plot_outage
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        try:
            result = run_outage_bench(
                tuple(s.strip() for s in scenarios.split(",") if s.strip()) if scenarios else None,
                tuple(p.strip() for p in paths.split(",") if p.strip()),
                outage_seconds,
                rate,
                retry_seconds,
                broker,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        outage_table(result)
        _write(result, json_path)
        if plot is not None:
            plot_outage(result, plot)
            typer.echo(f"plot written to {plot}")
