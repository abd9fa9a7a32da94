"""What the live stack costs, read from outside: the processes of one ``ridehail up`` (named by the
service each runs, ``auth+pricing+simulator`` for services sharing one), their memory and CPU, and
the consumer lag their ``/metrics`` report."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import httpx
import psutil

MB = 1024 * 1024
_LAG = re.compile(r'^ridehail_consumer_lag\{consumer="([^"]+)"\} ([0-9.eE+-]+)$', re.MULTILINE)


def service_of(proc: psutil.Process, root_pid: int) -> str | None:
    """``auth``, ``matching``, ... for ``ridehail serve X`` (``auth+pricing`` for ``python -m
    ridehail.serve auth+pricing``); ``broker``; ``supervisor`` (``ridehail up`` itself); None for
    what is not counted (Postgres: the issue counts the stack without it)."""
    if proc.pid == root_pid:
        return "supervisor"
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for launcher in ("serve", "ridehail.serve"):  # ``ridehail serve X`` or ``python -m ridehail.serve X``
        if launcher not in cmd:
            continue
        i = cmd.index(launcher)
        if i + 1 < len(cmd):
            return cmd[i + 1]
    if "postgres" in name or any("postgres" in c for c in cmd[:1]):
        return None
    if name == "tansu" or any(c.endswith("/tansu") for c in cmd[:1]) or "kafka.Kafka" in cmd:
        return "broker"
    return name


@dataclass
class Sample:
    at: float
    rss_mb: dict[str, float]
    cpu_s: dict[int, float]  # pid -> user + system seconds so far


@dataclass
class StackProbe:
    """Samples every process under ``root_pid`` (``ridehail up``): RSS by service, CPU seconds."""

    root_pid: int
    samples: list[Sample] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in found:
            known = self._procs.get(p.pid)
            if known is None or known.create_time() != p.create_time():
                self._procs[p.pid] = p
                name = service_of(p, self.root_pid)
                if name is None:
                    continue
                self.names[p.pid] = name
            if p.pid in self.names:
                out.append(self._procs[p.pid])
        return out

    def sample(self) -> Sample:
        rss: dict[str, float] = {}
        cpu: dict[int, float] = {}
        for p in self.processes():
            try:
                with p.oneshot():
                    r = p.memory_info().rss / MB
                    t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            name = self.names[p.pid]
            rss[name] = rss.get(name, 0.0) + r
            cpu[p.pid] = t.user + t.system
        s = Sample(time.monotonic(), rss, cpu)
        self.samples.append(s)
        return s

    def cpu_cores(self, first: Sample, last: Sample) -> tuple[float, dict[str, float]]:
        """Cores used between two samples, in total and by service (a process that started in
        between counts from zero; one that ended is not counted after its last sample)."""
        wall = max(1e-9, last.at - first.at)
        by: dict[str, float] = {}
        for pid, t in last.cpu_s.items():
            used = t - first.cpu_s.get(pid, 0.0)
            name = self.names.get(pid, "?")
            by[name] = by.get(name, 0.0) + used / wall
        return sum(by.values()), by


_BATCH = re.compile(
    r'^ridehail_consumer_batch_(seconds|size)_(sum|count)\{consumer="([^"]+)"\} ([0-9.eE+-]+)$', re.MULTILINE
)


def batch_counters(client: httpx.Client, metrics_urls: list[str]) -> dict[str, dict[str, float]]:
    """Per consumer: the batch counters its service reports now (``seconds_sum``, ``size_count``...)."""
    raw: dict[str, dict[str, float]] = {}
    for url in metrics_urls:
        try:
            text = client.get(url).text
        except httpx.HTTPError:
            continue
        for what, agg, consumer, value in _BATCH.findall(text):
            raw.setdefault(consumer, {})[f"{what}_{agg}"] = float(value)
    return raw


def batch_window(
    start: dict[str, dict[str, float]], end: dict[str, dict[str, float]], wall_s: float
) -> dict[str, dict[str, float]]:
    """Per consumer, between two readings: batches applied, mean batch size, mean time to apply one
    (handler + commit) and the share of the window spent applying batches."""
    out: dict[str, dict[str, float]] = {}
    for consumer, v in sorted(end.items()):
        s0 = start.get(consumer, {})
        d = {k: v.get(k, 0.0) - s0.get(k, 0.0) for k in ("seconds_sum", "seconds_count", "size_sum", "size_count")}
        if d["seconds_count"] > 0:
            out[consumer] = {
                "batches": d["seconds_count"],
                "mean_size": round(d["size_sum"] / max(1.0, d["size_count"]), 1),
                "mean_ms": round(1000 * d["seconds_sum"] / d["seconds_count"], 2),
                "busy_share": round(d["seconds_sum"] / max(1e-9, wall_s), 3),
            }
    return out


def postgres_cpu_s() -> float:
    """CPU seconds of every Postgres process on the machine (the stack's server and any other:
    the stack's own share cannot be told apart when several run)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "postgres":
                t = p.cpu_times()
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def consumer_lags(client: httpx.Client, metrics_urls: list[str]) -> dict[str, float]:
    """``ridehail_consumer_lag`` of every consumer the services report (messages behind the end)."""
    lags: dict[str, float] = {}
    for url in metrics_urls:
        try:
            text = client.get(url).text
        except httpx.HTTPError:
            continue
        for consumer, value in _LAG.findall(text):
            lags[consumer] = max(lags.get(consumer, 0.0), float(value))
    return lags
