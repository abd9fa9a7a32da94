"""The ``ridehail`` command: run the stack, serve one service, migrate, simulate, record, bench.

Heavy imports happen inside commands, so ``ridehail --help`` stays fast. Services add their own
commands (``ridehail.<service>.commands.register(app)``); every benchmark lives in ``ridehail.bench``.
"""

from __future__ import annotations

import importlib
from enum import StrEnum

import typer

from ridehail.auth import commands as auth_commands
from ridehail.bench import commands as bench_commands
from ridehail.catalog import SERVICES
from ridehail.cluster import commands as cluster_commands
from ridehail.replay import commands as replay_commands
from ridehail.simulator import commands as simulator_commands
from ridehail.stack import commands as stack_commands

app = typer.Typer(
    name="ridehail",
    help="An Uber-style ride-hailing system on one laptop: event-driven vs REST, measured.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: each writes JSON results to --json PATH.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(db_app, name="db")
app.add_typer(topics_app, name="topics")

Service = StrEnum("Service", {s.name: s.name for s in SERVICES})  # type: ignore[misc]


@app.command()
def serve(service: Service = typer.Argument(..., help="Which service to run in this process.")) -> None:
    """Run one service in the foreground (what `ridehail up` starts for each child)."""
    module = importlib.import_module(f"ridehail.{service.value}.main")
    module.serve()


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the database (RIDEHAIL_DATABASE_URL, else the one `ridehail up` would use)."""
    from ridehail.common.logging import configure_logging
    from ridehail.common.migrate import upgrade
    from ridehail.common.postgres import resolve_database_url
    from ridehail.common.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    configure_logging(settings.log_level, settings.log_format)
    url, _ = resolve_database_url(settings, allow_embedded=False)
    upgrade(url, revision)
    typer.echo(f"database at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base")) -> None:
    """Roll the schema back to REVISION."""
    from ridehail.common.migrate import downgrade
    from ridehail.common.postgres import resolve_database_url
    from ridehail.common.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    url, _ = resolve_database_url(settings, allow_embedded=False)
    downgrade(url, revision)
    typer.echo(f"database at revision {revision}")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every ridehail topic (and its dead-letter topic) that is missing."""
    from ridehail.common.logging import configure_logging
    from ridehail.common.settings import CommonSettings, load_settings
    from ridehail.common.topics import ensure_topics
    from ridehail.domain.topics import all_topic_specs

    settings = load_settings(CommonSettings)
    configure_logging(settings.log_level, settings.log_format)
    created = ensure_topics(settings.bootstrap)
    for spec in all_topic_specs():
        mark = "created" if spec.name in created else "exists"
        typer.echo(f"{spec.name:40} {spec.partitions:3} partitions  key={spec.key:10} {mark}")


@app.command()
def broker(port: int = typer.Option(None, help="Port (default RIDEHAIL_BROKER_PORT, 9092).")) -> None:
    """Run only the embedded broker (tansu, memory storage) in the foreground."""
    import subprocess

    from ridehail.common.broker import broker_command
    from ridehail.common.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    cmd = broker_command(settings.host, port or settings.broker_port)
    typer.echo(f"embedded broker on {settings.host}:{port or settings.broker_port} (memory storage)")
    raise typer.Exit(subprocess.call(cmd))


stack_commands.register(app)
cluster_commands.register(app)
auth_commands.register(app)
simulator_commands.register(app)
replay_commands.register(app)
bench_commands.register(bench_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
