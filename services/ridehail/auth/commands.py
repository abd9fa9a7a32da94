"""``ridehail users ...`` (admin accounts, login links, key rotation) and ``ridehail bench auth``."""

from __future__ import annotations

import typer

users_app = typer.Typer(help="Accounts, demo login links and signing keys of the auth service.", no_args_is_help=True)


def _database_url() -> str:
    from ridehail.auth.settings import AuthSettings
    from ridehail.common.logging import configure_logging
    from ridehail.common.postgres import resolve_database_url
    from ridehail.common.settings import load_settings

    settings = load_settings(AuthSettings)
    configure_logging("WARNING", settings.log_format)
    url, _ = resolve_database_url(settings, allow_embedded=False)
    return url


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")

    @users_app.command("create-admin")
    def create_admin(
        email: str = typer.Option(..., "--email", help="The admin's email (login name)."),
        password: str = typer.Option(
            None,
            "--password",
            envvar="RIDEHAIL_ADMIN_PASSWORD",
            help="Password (else RIDEHAIL_ADMIN_PASSWORD, else asked for without echo).",
        ),
    ) -> None:
        """Create an admin account (admins cannot register through the API)."""
        from ridehail.auth.admin import AccountError, create_user_sync

        if not password:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            user_id = create_user_sync(_database_url(), email, password, "admin")
        except AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"admin {email} created (id {user_id})")

    @users_app.command("login-link")
    def login_link(
        role: str = typer.Option("viewer", help="Demo account role: viewer (map only) or rider."),
        ttl: int = typer.Option(3600, help="Seconds the link stays valid (it works once)."),
    ) -> None:
        """Print a one-time map URL that logs a demo user in."""
        from ridehail.auth.demo import DEMO_ROLES, create_login_code_sync
        from ridehail.auth.settings import AuthSettings
        from ridehail.common.settings import load_settings

        if role not in DEMO_ROLES or not 30 <= ttl <= 86400:
            raise typer.BadParameter(f"role must be one of {DEMO_ROLES} and ttl 30..86400")
        code = create_login_code_sync(_database_url(), role, ttl)
        typer.echo(f"{load_settings(AuthSettings).public_gateway_url}/?login={code}")

    @users_app.command("rotate-key")
    def rotate_key() -> None:
        """Retire the active signing key and create a new one (old tokens stay valid until they expire)."""
        from ridehail.auth.admin import rotate_key_sync
        from ridehail.auth.settings import AuthSettings
        from ridehail.common.settings import load_settings

        kid = rotate_key_sync(_database_url(), load_settings(AuthSettings).jwt_algorithm)
        typer.echo(f"new signing key {kid}; running auth services pick it up within a minute")
