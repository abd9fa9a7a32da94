"""`ridehail up`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        drivers: int = typer.Option(None, "--drivers", "-n", help="Fleet size (default RIDEHAIL_DRIVERS, 200)."),
        riders_per_min: float = typer.Option(
            30.0, "--riders-per-min", help="Simulated ride requests per minute (0 turns riders off)."
        ),
        seed: int = typer.Option(None, "--seed", help="Simulator seed (same seed, same fleet movements)."),
        without: list[str] = typer.Option(
            [], "--without", help="Leave a service out (auth, matching, gateway, simulator); repeatable."
        ),
        ready_timeout: float = typer.Option(90.0, help="Seconds to wait for every service to be ready."),
    ) -> None:
        """Run the whole stack: broker, Postgres, migrations, topics, auth, matching, gateway, simulator."""
        from ridehail.common.logging import configure_logging
        from ridehail.common.settings import CommonSettings, load_settings
        from ridehail.stack.supervisor import SERVICE_ORDER, StackOptions, run_stack

        settings = load_settings(CommonSettings)
        configure_logging(settings.log_level, settings.log_format, service="up")
        unknown = [w for w in without if w not in SERVICE_ORDER]
        if unknown:
            raise typer.BadParameter(f"unknown service(s) {unknown}; choose from {list(SERVICE_ORDER)}")
        if drivers is not None and drivers < 0:
            raise typer.BadParameter("--drivers must be >= 0")
        services = tuple(s for s in SERVICE_ORDER if s not in without)
        if riders_per_min < 0:
            raise typer.BadParameter("--riders-per-min must be >= 0")
        extra = {"RIDEHAIL_RIDERS_PER_MIN": str(riders_per_min)}
        if seed is not None:
            extra["RIDEHAIL_SEED"] = str(seed)
        options = StackOptions(drivers=drivers, services=services, ready_timeout_s=ready_timeout, extra_env=extra)
        raise typer.Exit(run_stack(settings, options))
