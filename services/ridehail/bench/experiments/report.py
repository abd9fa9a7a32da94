"""Rich tables and matplotlib plots of the experiment results (matplotlib is imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PATH_COLOURS = {"kafka": "#1f77b4", "rest": "#d62728", "rest-kafka": "#2ca02c", "rest-kafka-enqueue": "#9467bd"}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ingest_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title="bench ingest: the same pings through each path")
    for col in (
        "path",
        "drivers",
        "offered/s",
        "accepted/s",
        "in Postgres/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU",
        "CPU ms/1k",
        "client CPU",
        "ping->row p50/p99 ms",
        "drain s",
    ):
        t.add_column(col, justify="right" if col != "path" else "left")
    for s in result["steps"]:
        errors = sum(s["errors"].values())
        t.add_row(
            s["path"],
            _fmt(s["drivers"]),
            _fmt(s["offered_per_s"]),
            _fmt(s["accepted_per_s"]),
            _fmt(s["persisted_per_s"]),
            _fmt(s["latency_ms"]["p50"]),
            _fmt(s["latency_ms"]["p99"]),
            _fmt(errors),
            _fmt(s["server_cpu_cores"]["total"]),
            _fmt(s.get("server_cpu_ms_per_1k_pings")),
            _fmt(s["client_cpu_cores"]),
            f"{_fmt(s['ping_to_row_ms']['p50'])} / {_fmt(s['ping_to_row_ms']['p99'])}",
            _fmt(s["drain_s"]),
        )
    console.print(t)
    summary = result["summary"]
    for path in ("kafka", "rest", "rest-kafka", "rest-kafka-enqueue"):
        if path in summary:
            s = summary[path]
            console.print(
                f"  {path:20} max {s['max_achieved_per_s']:>10,.0f} pings/s applied "
                f"(at {s['at_drivers']:,} drivers; saturated: {s['saturated']})"
            )
    if "ratio_kafka_to_rest" in summary:
        console.print(f"  kafka / rest saturation throughput: [bold]{summary['ratio_kafka_to_rest']}x[/bold]")


def plot_ingest(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    paths = [p for p in result["config"]["paths"] if any(s["path"] == p for s in steps)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax_t, ax_l, ax_c = axes
    offered = sorted({s["offered_per_s"] for s in steps})
    ax_t.plot(offered, offered, ":", color="grey", label="offered")
    for p in paths:
        rows = [s for s in steps if s["path"] == p]
        x = [s["offered_per_s"] for s in rows]
        c = PATH_COLOURS.get(p)
        ax_t.plot(x, [s["achieved_per_s"] for s in rows], "o-", color=c, label=p)
        ax_l.plot(x, [s["latency_ms"]["p99"] or float("nan") for s in rows], "o-", color=c, label=f"{p} p99")
        ax_l.plot(x, [s["latency_ms"]["p50"] or float("nan") for s in rows], "x--", color=c, alpha=0.6)
        ax_c.plot(
            [s["achieved_per_s"] for s in rows],
            [s["server_cpu_cores"]["total"] for s in rows],
            "o-",
            color=c,
            label=p,
        )
    ax_t.set(xlabel="pings offered / s (drivers at 1 Hz)", ylabel="pings applied to Postgres / s", title="Throughput")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    ax_l.set(
        xlabel="pings offered / s",
        ylabel="client-observed latency, ms (p99 solid, p50 dashed)",
        title="Latency until the answer",
    )
    ax_l.set_xscale("log")
    ax_l.set_yscale("log")
    ax_c.set(xlabel="pings applied / s", ylabel="server CPU, cores (edge+matching+broker+Postgres)", title="CPU cost")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ratio = result["summary"].get("ratio_kafka_to_rest")
    m = result["machine"]
    fig.suptitle(
        f"ridehail bench ingest: kafka/rest saturation throughput = {ratio}x  "
        f"({m['cpu_count']} cores, {m['cpu_model']}, {m['measured_at']})",
        fontsize=10,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
