"""Table and plot of ``ridehail bench outage`` (matplotlib is imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PATH_COLOURS = {"kafka": "#1f77b4", "rest": "#d62728", "rest-kafka": "#2ca02c", "rest-kafka-enqueue": "#9467bd"}


ACKS_COLOURS = {"0": "#ff7f0e", "1": "#8c564b", "all": "#1f77b4"}


def _med(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    lo, hi = s["iqr"]
    text = f"{s['median']:g}" if lo == hi else f"{s['median']:g} [{lo:g}-{hi:g}]"
    return text + (f" ({s['missing']} none)" if s["missing"] else "")


def outage_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=200)
    cfg = result["config"]
    t = Table(
        title=f"bench outage: {cfg['outage_s']:g} s outages, {cfg['rate_per_arm_per_s']:g} pings/s per arm, "
        f"median [IQR] of {cfg['repeats']} repeats"
    )
    for col in (
        "broker",
        "scenario",
        "arm",
        "lost %",
        "ack'd but lost",
        "fresh after s",
        "stale s",
        "catch-up s",
        "stall s",
        "503+RA / timeout / refused",
    ):
        t.add_column(col, justify="left" if col in ("broker", "scenario", "arm") else "right")
    for s in result["summary"]:
        a = s["answers"]

        def n(kind: str, a: dict[str, Any] = a) -> str:
            return _med(a[kind]) if kind in a else "0"

        t.add_row(
            s["broker"],
            s["scenario"],
            s["arm"],
            _med(s["lost_pct"]),
            _med(s["acknowledged_but_lost"]),
            _med(s["freshness_recovered_s"]),
            _med(s["freshness_stale_s"]),
            _med(s["catch_up_s"]),
            _med(s["producer_stall_s"]),
            f"{n('503_retry_after')} / {n('timeout')} / {n('refused')}" if s["path"] != "kafka" else "-",
        )
    console.print(t)


def _err(s: dict[str, Any]) -> tuple[float, float, float]:
    med = s["median"] if s["median"] is not None else float("nan")
    lo, hi = s["iqr"] if s["iqr"] is not None else (med, med)
    return med, med - lo, hi - med


def plot_outage(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    scenarios = list(dict.fromkeys((s["broker"], s["scenario"]) for s in summary))
    fig, axes = plt.subplots(len(scenarios), 3, figsize=(16, 3.8 * len(scenarios)), squeeze=False)
    threshold = result["config"]["freshness_threshold_s"]
    for row, (broker, scenario) in zip(axes, scenarios, strict=True):
        ax_loss, ax_fresh, ax_acks = row
        rows = [s for s in summary if s["broker"] == broker and s["scenario"] == scenario]
        title = f"{broker}: {scenario} {result['config']['outage_s']:g} s"
        families = [r for r in rows if r["acks"] in (None, "all")]
        for path in dict.fromkeys(r["path"] for r in families):
            line = sorted((r for r in families if r["path"] == path), key=lambda r: r["budget_s"])
            label = path + (" (acks=all)" if path == "kafka" else "")
            for ax, metric in ((ax_loss, "lost_pct"), (ax_fresh, "freshness_stale_s")):
                pts = [_err(r[metric]) for r in line]
                ax.errorbar(
                    [r["budget_s"] for r in line],
                    [p[0] for p in pts],
                    yerr=[[p[1] for p in pts], [p[2] for p in pts]],
                    color=PATH_COLOURS.get(path),
                    marker="o",
                    capsize=3,
                    label=label,
                )
        budgets = result["config"]["budgets_s"]
        ax_loss.set(
            xlabel="retry budget, s (REST: give up at this age; Kafka: message.timeout.ms)",
            ylabel="pings lost, % of produced (not in Postgres)",
            title=f"{title}: loss vs budget",
        )
        ax_fresh.set(
            xlabel="retry budget, s",
            ylabel=f"s with p99 position age >= {threshold:g} s",
            title=f"{title}: stale time, outage start to load end",
        )
        for ax in (ax_loss, ax_fresh):
            ax.set_xscale("log")
            ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
            ax.minorticks_off()
            ax.set_ylim(bottom=0)
        acks_rows = sorted((r for r in rows if r["path"] == "kafka" and r["acks"] is not None), key=lambda r: r["acks"])
        budget = result["config"]["acks_arms_budget_s"]
        acks_rows = [r for r in acks_rows if r["budget_s"] == budget]
        for i, r in enumerate(acks_rows):
            for j, (metric, hatch) in enumerate((("lost", ""), ("acknowledged_but_lost", "//"))):
                med, lo, hi = _err(r[metric])
                ax_acks.text(i + j * 0.4, 0 if med != med else med, f"{med:g}", ha="center", va="bottom", fontsize=8)
                ax_acks.bar(
                    i + j * 0.4,
                    med,
                    0.38,
                    yerr=[[lo], [hi]],
                    color=ACKS_COLOURS.get(r["acks"]),
                    hatch=hatch,
                    capsize=3,
                    label=f"acks={r['acks']}: {metric.replace('_', ' ')}",
                )
        ax_acks.set_xticks([i + 0.2 for i in range(len(acks_rows))], [f"acks={r['acks']}" for r in acks_rows])
        ax_acks.set(ylabel="pings (median, IQR bars)", title=f"{title}: kafka by acks, budget {budget:g} s")
        for ax in row:
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
