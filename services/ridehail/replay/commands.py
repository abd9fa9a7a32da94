"""CLI commands: ``ridehail record``, ``ridehail replay``, ``ridehail db state-hash``, ``ridehail bench replay``."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

DEFAULT_TOPICS_HELP = "Topics (repeat or comma-separate). Default: the three ridehail topics."


def _split(values: list[str] | None) -> list[str]:
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def _bootstrap(explicit: str | None) -> str:
    if explicit:
        return explicit
    from ridehail.common.settings import CommonSettings, load_settings

    return load_settings(CommonSettings).bootstrap


def _configure_logging() -> None:
    from ridehail.common.logging import configure_logging
    from ridehail.common.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.log_format)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """First Ctrl-C (or SIGTERM) asks for a clean stop; a second Ctrl-C interrupts at once."""
    stop = threading.Event()
    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)

    def handler(_signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def record(
    out: Path = typer.Option(..., "--out", "-o", help="File to write (.rhrec)."),
    topics: list[str] | None = typer.Option(None, "--topics", "-t", help=DEFAULT_TOPICS_HELP),
    duration: str | None = typer.Option(None, help="Stop after this long, e.g. 30s, 5m, 1h (default: Ctrl-C)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Also record what the topics already hold."),
    idle_timeout: str | None = typer.Option(None, help="Stop after this long without a new record, e.g. 5s."),
    codec: str | None = typer.Option(None, help="zstd (default when installed) or zlib."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap servers (default: the stack's)."),
) -> None:
    """Record Kafka topics into a compressed, streamable file; Ctrl-C stops and leaves a valid file."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from ridehail.domain.topics import TOPICS
    from ridehail.replay.recorder import Recorder, RecordError, RecordProgress, parse_duration

    _configure_logging()
    console = Console(stderr=True)
    try:
        duration_s = parse_duration(duration) if duration else None
        idle_s = parse_duration(idle_timeout) if idle_timeout else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    names = _split(topics) or [t.name for t in TOPICS]
    recorder = Recorder(_bootstrap(bootstrap), out, names, from_beginning=from_beginning, codec=codec)
    line = Text("connecting...")

    def show(p: RecordProgress) -> None:
        per = "  ".join(f"{k.removeprefix('ridehail.')}={v:,}" for k, v in p.per_topic.items())
        line.plain = (
            f"recording {p.records:,} records  {p.rate_per_s:,.0f}/s  {_size(p.bytes_written)}  "
            f"{p.elapsed_s:,.0f}s{'/' + format(duration_s, '.0f') + 's' if duration_s else ''}  [{per}]"
        )
        live.refresh()

    with _stop_on_signals() as stop, Live(line, console=console, transient=False, auto_refresh=False) as live:
        try:
            result = recorder.run(stop, duration_s=duration_s, idle_timeout_s=idle_s, on_progress=show)
        except (RecordError, ValueError, OSError) as exc:
            raise _fail(str(exc)) from None
    console.print(
        f"[green]wrote[/] {result.path}: {result.records:,} records in {result.frames} frame(s), "
        f"{_size(result.bytes_written)}, {result.elapsed_s:.1f}s (ended: {result.ended})",
        highlight=False,
    )


def replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A recording (.rhrec)."),
    speed: str = typer.Option("1", help="1 (original spacing), 10 (ten times faster), 0.5, or max."),
    loop: bool = typer.Option(False, "--loop", help="Start over at the end, until Ctrl-C."),
    topics: list[str] | None = typer.Option(None, "--topics", "-t", help="Only these recorded topics."),
    topic_map: list[str] | None = typer.Option(None, "--topic-map", help="SOURCE=TARGET (repeatable)."),
    time_from: str | None = typer.Option(None, "--from", help="Start at: 90s / 2m after the start, ISO time, or ms."),
    time_to: str | None = typer.Option(None, "--to", help="Stop at: same forms as --from."),
    keep_timestamps: bool = typer.Option(
        False, "--keep-timestamps", help="Keep recorded Kafka timestamps and event ts (default: now)."
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad frames/records, report how much."),
    check: bool = typer.Option(False, "--check", help="Only read and validate the file; send nothing."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap servers (default: the stack's)."),
) -> None:
    """Put a recording back on Kafka with its original spacing (scaled by --speed), keys and headers."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from ridehail.replay.fileformat import RecordingError
    from ridehail.replay.replay_options import (
        ReplayError,
        ReplayOptions,
        ReplayProgress,
        parse_speed,
        parse_time_bound,
        parse_topic_map,
    )
    from ridehail.replay.replayer import Replayer

    _configure_logging()
    console = Console(stderr=True)
    try:
        options = ReplayOptions(
            speed=parse_speed(speed),
            loop=loop,
            topics=_split(topics) or None,
            topic_map=parse_topic_map(topic_map or []),
            time_from=parse_time_bound(time_from) if time_from else None,
            time_to=parse_time_bound(time_to) if time_to else None,
            keep_timestamps=keep_timestamps,
            skip_bad=skip_bad,
            check_only=check,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    replayer = Replayer(file, "" if check else _bootstrap(bootstrap), options)
    progress = Progress(
        TextColumn("[bold]replay[/] x{task.fields[speed]}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
    )
    task = progress.add_task("replay", total=file.stat().st_size, speed=speed, status="")

    def show(p: ReplayProgress) -> None:
        done = f"/{p.records_total:,}" if p.records_total else ""
        status = (
            f"{p.records_sent:,}{done} sent  {p.rate_per_s:,.0f}/s  t=+{p.position_s:,.1f}s  "
            f"behind {p.behind_ms:,.1f} ms (max {p.max_behind_ms:,.1f})" + (f"  pass {p.passes + 1}" if loop else "")
        )
        progress.update(task, completed=p.bytes_read, status=status)
        progress.refresh()

    replayer.on_progress = None if check else show
    with _stop_on_signals() as stop:
        try:
            with progress if not check else contextlib.nullcontext():
                result = replayer.run(stop)
        except (ReplayError, RecordingError) as exc:
            raise _fail(str(exc)) from None
    s = result.summary()
    verb = "valid: would send" if check else "sent"
    console.print(
        f"[green]{verb}[/] {s['sent']:,} record(s)"
        + ("" if check else f" ({s['delivered']:,} acknowledged) in {s['seconds']}s, {s['rate_per_s']:,.0f}/s")
        + (f", {s['filtered_out']:,} filtered out" if s["filtered_out"] else "")
        + (f", {s['passes']} passes" if loop else "")
        + ("" if check or options.speed is None else f", max behind schedule {s['max_behind_ms']} ms")
        + (" (stopped)" if result.stopped else ""),
        highlight=False,
    )
    if result.skipped:
        console.print(f"[yellow]{result.skipped.summary()}[/]", highlight=False)
        for problem in result.skipped.problems[:20]:
            console.print(f"  [yellow]-[/] {problem}", highlight=False, soft_wrap=True)
    if result.failed:
        raise _fail(f"{result.failed} record(s) were not delivered: {result.first_error}", code=1)


def state_hash_command(
    database_url: str | None = typer.Option(None, help="Database (default: RIDEHAIL_DATABASE_URL / the stack's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (hash, counts by status)."),
) -> None:
    """Print a hash of the final rides and drivers state (no wall-clock columns): equal runs, equal hash."""
    import asyncio
    import json

    from ridehail.replay.statehash import state_hash

    url = database_url
    if url is None:
        from ridehail.common.postgres import resolve_database_url
        from ridehail.common.settings import CommonSettings, load_settings

        url, _ = resolve_database_url(load_settings(CommonSettings), allow_embedded=False)
    try:
        result = asyncio.run(state_hash(url))
    except (OSError, TimeoutError) as exc:
        raise _fail(f"database unreachable: {exc}") from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        typer.echo(f"{result.digest}  rides={result.rides} drivers={result.drivers}")


def _db_group(app: typer.Typer) -> typer.Typer | None:
    for group in app.registered_groups:
        if group.name == "db" and group.typer_instance is not None:
            return group.typer_instance
    return None


def register(app: typer.Typer) -> None:
    app.command("record")(record)
    app.command("replay")(replay)
    db = _db_group(app)
    if db is not None:
        db.command("state-hash")(state_hash_command)
