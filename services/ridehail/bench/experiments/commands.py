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
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (capacity, latency, CPU per run) here."),
        arms: str = typer.Option(
            "kafka,kafka-per-device,rest,rest-batch,rest-group-commit,rest-2-workers,rest-kafka",
            "--arms",
            help="Which arms to measure (also: rest-kafka-enqueue).",
        ),
        repeats: int = typer.Option(5, "--repeats", help="Runs per arm and point, in an interleaved order."),
        rate_equal: float = typer.Option(
            300.0, "--rate-equal", help="Pings/s offered at the equal (latency) point (one every arm sustains)."
        ),
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
        plot: Path = typer.Option(None, "--plot", help="Write a PNG plot (loss and freshness vs budget, acks) here."),
        outage_seconds: float = typer.Option(12.0, "--outage-seconds", help="How long each component stays down."),
        rate: float = typer.Option(40.0, "--rate", help="Pings per second offered on each arm (path x budget x acks)."),
        scenarios: str = typer.Option(
            None,
            "--scenarios",
            help="What to stop. kafka: postgres, consumer, broker-1-of-3 (the default: these three), broker-2-of-3, "
            "partition-1-of-3, cluster-restart; tansu: broker (the default), consumer, postgres.",
        ),
        broker: str = typer.Option(
            "kafka,tansu",
            "--broker",
            help="kafka: a local 3-node Apache Kafka cluster (RF 3, min.insync.replicas=2; the main result; needs "
            "Java 17 + Maven, the partition scenario root); tansu: the embedded broker (in memory, one node).",
        ),
        paths: str = typer.Option(
            "kafka,rest,rest-kafka,rest-kafka-enqueue", "--paths", help="Which ingestion paths to load at once."
        ),
        budgets: str = typer.Option(
            "3,8,30", "--budgets", help="Retry budgets, s: REST gives a ping up at this age; Kafka message.timeout.ms."
        ),
        acks: str = typer.Option("0,1,all", "--acks", help="kafka path acks levels (0, 1: longest budget)."),
        repeats: int = typer.Option(5, "--repeats", help="Runs of every scenario (interleaved order)."),
    ) -> None:
        """Stop Postgres, matching or a broker under load: loss vs retry budget, freshness, answers, acks."""
        from ridehail.bench.experiments.outage_bench import run_outage_bench
        from ridehail.bench.experiments.report_outage import outage_table, plot_outage
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")

        def items(text: str | None) -> tuple[str, ...]:
            return tuple(s.strip() for s in (text or "").split(",") if s.strip())

        try:
            budget_list = tuple(float(b) for b in items(budgets))
        except ValueError:
            raise typer.BadParameter(f"--budgets must be comma-separated seconds, got {budgets!r}") from None
        try:
            result = run_outage_bench(
                items(scenarios) or None,
                items(paths),
                outage_seconds,
                rate,
                budget_list,
                items(broker),
                repeats,
                items(acks),
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        outage_table(result)
        _write(result, json_path)
        if plot is not None:
            plot_outage(result, plot)
            typer.echo(f"plot written to {plot}")
