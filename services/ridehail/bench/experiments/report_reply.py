"""Table and plot of ``ridehail bench reply`` (matplotlib is imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

COLOURS = {"rest": "#d62728", "kafka": "#1f77b4"}


def _ms(v: Any) -> str:
    return "> timeout" if v is None else f"{v:,.1f}"


def reply_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"bench reply: a caller waiting for the answer ({result['config']['rate']:g} requests/s offered)")
    for col in ("path:operation", "runs", "p50 ms (median, IQR)", "p99 ms (median)", "answered", "responder cores"):
        t.add_column(col)
    for key, s in result["summary"].items():
        if key.startswith("ratio"):
            continue
        p50 = s["p50_ms"]
        iqr = f" [{p50['iqr'][0]:,.1f}-{p50['iqr'][1]:,.1f}]" if p50["iqr"] else ""
        share = s["answered_share"]["median"]
        t.add_row(
            key,
            str(p50["runs"]),
            _ms(p50["median"]) + iqr,
            _ms(s["p99_ms"]["median"]),
            "-" if share is None else f"{share:.0%}",
            str(s["responder_cores"]["median"]),
        )
    console.print(t)
    down = Table(title="responder down (login): what the caller sees")
    for col in ("path", "sent while down", "errors", "learned after s (median)", "late replies", "never answered"):
        down.add_column(col)
    for path, d in result["responder_down"].items():
        learned = ", ".join(f"{k} {v.get('median', '-')}" for k, v in d["time_until_caller_learned_s"].items())
        errors = ", ".join(f"{k} {v}" for k, v in d["errors_by_kind"].items())
        down.add_row(path, str(d["sent_while_down"]), errors, learned, str(d["late_replies"]), str(d["never_answered"]))
    console.print(down)


def plot_reply(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = result["config"]["operations"]
    timeout_ms = result["config"]["timeout"] * 1000
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax_lat, ax_cpu, ax_down = axes
    width = 0.35
    tallest = 0.0
    for i, path in enumerate(("rest", "kafka")):
        for metric, hatch, offset in (("p50_ms", "", 0.0), ("p99_ms", "//", 0.5)):
            xs, meds, lo, hi = [], [], [], []
            for j, op in enumerate(ops):
                s = result["summary"][f"{path}:{op}"][metric]
                med = s["median"] if s["median"] is not None else timeout_ms  # beyond the time-out: drawn at it
                xs.append(j * 2 + offset + i * width / 2 - width / 4)
                meds.append(med)
                tallest = max(tallest, s["max"] if s["max"] is not None else med)
                lo.append(med - (s["min"] if s["min"] is not None else med))
                hi.append((s["max"] if s["max"] is not None else med) - med)
            ax_lat.bar(
                xs,
                meds,
                width / 2,
                yerr=[lo, hi],
                capsize=3,
                color=COLOURS[path],
                hatch=hatch,
                alpha=0.85,
                label=f"{path} {metric[:3]}",
            )
    if tallest > timeout_ms / 2:  # otherwise the line would flatten every bar
        ax_lat.axhline(timeout_ms, color="grey", linestyle="--", linewidth=1, label="caller time-out")
    ax_lat.set_xticks([j * 2 + 0.25 for j in range(len(ops))], ops)
    ax_lat.set(
        ylabel="latency from due, ms (median of runs; bars: min-max)",
        title=f"p50 / p99 at equal offered load (time-out {timeout_ms:g} ms)",
    )
    ax_lat.legend(fontsize=8)
    ax_lat.grid(True, axis="y", alpha=0.3)

    for i, path in enumerate(("rest", "kafka")):
        for j, op in enumerate(ops):
            s = result["summary"][f"{path}:{op}"]["responder_cores"]
            if s["median"] is None:
                continue
            ax_cpu.bar(
                j + i * width,
                s["median"],
                width,
                yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                capsize=3,
                color=COLOURS[path],
                label=path if j == 0 else None,
            )
    ax_cpu.set_xticks([j + width / 2 for j in range(len(ops))], ops)
    ax_cpu.set(ylabel="CPU cores of the responder process (broker apart)", title="responder CPU per run")
    ax_cpu.legend(fontsize=8)
    ax_cpu.grid(True, axis="y", alpha=0.3)

    paths = list(result["responder_down"])
    learned = []
    for p in paths:
        anyone = result["responder_down"][p]["time_until_caller_learned_s"]["any_error"]
        learned.append(anyone["median"] if anyone.get("n") else 0.0)
    late = [result["responder_down"][p]["late_replies"] for p in paths]
    ax_down.bar(paths, learned, color=[COLOURS[p] for p in paths])
    for x, (sec, n) in enumerate(zip(learned, late, strict=True)):
        ax_down.annotate(f"{sec:.3f} s\n{n} late replies", (x, sec), ha="center", va="bottom", fontsize=9)
    ax_down.set(
        ylabel="s from due until the caller learned of the failure (median)",
        title="login responder down",
    )
    ax_down.set_ylim(0, max([*learned, 0.1]) * 1.3)
    ax_down.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
