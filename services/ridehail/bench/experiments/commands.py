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
    @bench.command("ingest")
    def bench_ingest(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (capacity, latency, CPU per run) here."),
        arms: str = typer.Option(
            "kafka,kafka-per-device,rest,rest-batch,rest-group-commit,rest-2-workers,rest-kafka",
            "--arms",
            help="Which arms to measure (also: rest-kafka-enqueue).",
        ),
        repeats: int = typer.Option(5, "--repeats", help="Runs per arm and point, in an interleaved order."),
        rate_equal: float = typer.Option(1000.0, "--rate-equal", help="Pings/s offered at the equal (latency) point."),
        rate_capacity: float = typer.Option(
            50000.0, "--rate-capacity", help="Pings/s offered at the capacity point (above every arm's capacity)."
        ),
        seconds: float = typer.Option(3.0, "--seconds", help="Measured window per run."),
        warmup: float = typer.Option(1.0, "--warmup", help="Seconds of load before each window."),
        drivers: int = typer.Option(
            2000, "--drivers", help="Simulated drivers (each pings rate/drivers times a second)."
        ),
        budget: float = typer.Option(
            5.0,
            "--budget",
            help="Seconds a ping may take to be answered (HTTP time-out = producer message.timeout.ms).",
        ),
        batch_size: int = typer.Option(100, "--batch-size", help="rest-batch: most pings per request."),
        batch_linger_ms: float = typer.Option(
            10.0, "--batch-linger-ms", help="rest-batch: longest a ping waits for a batch."
        ),
        group_commit_ms: float = typer.Option(5.0, "--group-commit-ms", help="rest-group-commit: the edge's window."),
        device_producers: int = typer.Option(
            16, "--device-producers", help="kafka-per-device: librdkafka producers (one record per request each)."
        ),
        rest_db_pool: int = typer.Option(32, "--rest-db-pool", help="Postgres connections of each rest edge (worker)."),
    ) -> None:
        """The same pings through every arm at equal offered rates: latency, capacity, CPU, accounting."""
        import sys

        from ridehail.bench.experiments.ingest_study import run_ingest_study
        from ridehail.bench.experiments.report_ingest import ingest_study_table, plot_ingest_study, progress_line
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())

        def progress(n: int, total: int, run: dict) -> None:  # type: ignore[type-arg]
            print(progress_line(n, total, run), file=sys.stderr, flush=True)

        try:
            result = run_ingest_study(
                arm_list,
                repeats=repeats,
                rate_equal=rate_equal,
                rate_capacity=rate_capacity,
                seconds=seconds,
                warmup=warmup,
                drivers=drivers,
                budget_s=budget,
                batch_size=batch_size,
                batch_linger_ms=batch_linger_ms,
                group_commit_ms=group_commit_ms,
                device_producers=device_producers,
                rest_db_pool=rest_db_pool,
                progress=progress,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        ingest_study_table(result)
        _write(result, json_path)
        if plot is not None:
            plot_ingest_study(result, plot)
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
