"""Table and plot of ``ridehail bench ingest`` (matplotlib imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

COLOURS = {
    "kafka": "#1f77b4",
    "kafka-per-device": "#17becf",
    "rest": "#d62728",
    "rest-batch": "#ff7f0e",
    "rest-group-commit": "#8c564b",
    "rest-2-workers": "#e377c2",
    "rest-kafka": "#2ca02c",
    "rest-kafka-enqueue": "#9467bd",
}


def _m(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-" if not s["runs"] else "> budget"
    lo, hi = s["iqr"]
    return f"{s['median']:,.1f} [{lo:,.0f}-{hi:,.0f}]"


def progress_line(n: int, total: int, run: dict[str, Any]) -> str:
    a = run["accounting"]
    lat = run["latency_ms"]
    return (
        f"[{n}/{total}] {run['arm']:<18} {run['point']:<8} r{run['repeat']} offered {run['offered_per_s']:,.0f}/s "
        f"persisted {run['persisted_per_s']:,.0f}/s p50 {lat['p50']} p99 {lat['p99']} ms "
        f"unanswered {lat['unanswered']} lost {a['lost']} ack-missing {a['acknowledged_but_missing']} "
        f"| {run['bottleneck']}"
    )


def ingest_study_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title="bench ingest: median [IQR] over repeats")
    for col in ("arm", "point", "offered/s", "persisted/s", "p50 ms", "p99 ms", "CPU ms/1k", "bottleneck", "lost"):
        t.add_column(col, justify="left" if col in ("arm", "point", "bottleneck") else "right")
    for arm, points in result["summary"].items():
        for point, s in points.items():
            t.add_row(
                arm,
                point,
                f"{s['offered_per_s']:,.0f}",
                _m(s["persisted_per_s"]),
                _m(s["p50_ms"]),
                _m(s["p99_ms"]),
                _m(s["cpu_ms_per_1k_pings"]),
                ", ".join(f"{k} x{v}" for k, v in s["bottleneck"].items()),
                f"{s['accounting_total'].get('lost', 0):,}",
            )
    console.print(t)


def plot_ingest_study(result: dict[str, Any], png: Path) -> None:
    """Three panels, one dot per run and a bar at the median: persisted/s at the capacity point,
    p50 and p99 latency at the equal point (log scale), CPU ms per 1,000 pings at the equal point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in COLOURS if a in result["summary"]] + [a for a in result["summary"] if a not in COLOURS]
    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    panels = (
        ("capacity", lambda r: r["persisted_per_s"], "persisted to Postgres [pings/s]", False),
        ("equal", None, "latency from due to answer [ms]", True),
        ("equal", lambda r: r["cpu_ms_per_1k_pings"], "server CPU per 1,000 pings [ms]", False),
    )
    for ax, (point, value, label, log) in zip(axes, panels, strict=True):
        offered = next((r["offered_per_s"] for r in runs if r["point"] == point), None)
        for x, arm in enumerate(arms):
            mine = [r for r in runs if r["arm"] == arm and r["point"] == point]
            colour = COLOURS.get(arm, "grey")
            if value is None:
                for dx, q, marker in ((-0.15, "p50", "o"), (0.15, "p99", "^")):
                    ys = [r["latency_ms"][q] for r in mine if r["latency_ms"][q] is not None]
                    ax.scatter(
                        [x + dx] * len(ys), ys, color=colour, marker=marker, alpha=0.7, label=q if x == 0 else None
                    )
                    if ys:
                        ys.sort()
                        ax.hlines(ys[len(ys) // 2], x + dx - 0.1, x + dx + 0.1, color="black")
                continue
            ys = [value(r) for r in mine if value(r) is not None]
            ax.scatter([x] * len(ys), ys, color=colour, alpha=0.7, label="one run" if x == 0 else None)
            if ys:
                ys.sort()
                ax.hlines(ys[len(ys) // 2], x - 0.25, x + 0.25, color="black", label="median" if x == 0 else None)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
        ax.set_ylabel(label)
        ax.set_title(f"{point} point: {offered:,.0f} pings/s offered" if offered else point)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(
        f"ridehail bench ingest: {result['config']['repeats']} run(s) per arm and point, {m['cpu_count']} cores "
        f"(load {m['load_avg_at_start'][0]} -> {m.get('load_avg_at_end', ['?'])[0]}); median bar, one dot per run"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
