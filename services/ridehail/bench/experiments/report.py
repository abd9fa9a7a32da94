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


def outage_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    label = result.get("broker", {}).get("label", "embedded tansu (in memory, single node)")
    t = Table(title=f"bench outage: {result['config']['outage_s']:.0f} s outages under steady load on {label}")
    for col in (
        "stopped",
        "path",
        "produced",
        "accepted",
        "in Postgres",
        "lost",
        "lost after accept",
        "client errors",
        "backlog peak",
        "catch-up s",
        "stall s",
    ):
        t.add_column(col, justify="right" if col not in ("stopped", "path") else "left")
    for sc in result["scenarios"]:
        for p in sc["paths"]:
            t.add_row(
                sc["scenario"],
                p["path"],
                _fmt(p["produced"]),
                _fmt(p["accepted"]),
                _fmt(p["persisted"]),
                _fmt(p["lost"]),
                _fmt(p["lost_after_accept"]),
                _fmt(p["client_errors"]),
                _fmt(p["backlog_peak"]),
                _fmt(p["catch_up_s"]),
                _fmt(p.get("producer_stall_s")),
            )
    console.print(t)


def plot_outage(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(14, 3.6 * len(scenarios)), squeeze=False)
    for row, sc in zip(axes, scenarios, strict=True):
        ax_a, ax_b = row
        for p in sc["paths"]:
            c = PATH_COLOURS.get(p["path"])
            tl = p["timeline"]
            ax_a.plot(tl["t"], tl["accepted_per_s"], color=c, label=p["path"])
            ax_b.plot(tl["t"], tl["backlog"], color=c, label=p["path"])
        for ax in row:
            down = f"{sc['scenario']} down"
            ax.axvspan(sc["outage_start_s"], sc["outage_end_s"], color="grey", alpha=0.2, label=down)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax_a.set(xlabel="s", ylabel="pings accepted / s", title=f"{sc['scenario']} stopped: what clients see")
        ax_b.set(xlabel="s", ylabel="accepted, not yet in Postgres", title=f"{sc['scenario']} stopped: backlog")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
