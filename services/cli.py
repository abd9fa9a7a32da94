"""The ``ridehail`` command: run the stack, serve one service, migrate, simulate, record, bench.

Heavy imports happen inside commands, so ``ridehail --help`` stays fast. Each service may add its
own commands through ``ridehail.<service>.commands.register(app, bench)``.
"""

from __future__ import annotations

import importlib
from enum import StrEnum

import typer

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

SERVICES = ("auth", "matching", "gateway", "simulator")
PLUGIN_MODULES = ("stack", "auth", "matching", "gateway", "simulator", "replay", "experiments", "pricing", "cluster")


class Service(StrEnum):
    auth = "auth"
    matching = "matching"
    gateway = "gateway"
    simulator = "simulator"
    ingest = "ingest"
    pricing = "pricing"


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
    from ridehail.common.topics import all_topic_specs, ensure_topics

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


def _register_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(f"ridehail.{name}.commands")
        except ModuleNotFoundError as exc:
            if exc.name != f"ridehail.{name}.commands" and exc.name != f"ridehail.{name}":
                raise
            continue
        module.register(app, bench_app)


_register_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
