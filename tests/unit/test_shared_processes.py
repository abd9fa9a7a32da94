"""Services sharing one process: how ``ridehail up`` groups them, and how a group runs and ends.

The runner tests start real processes (``run_services`` installs signal handlers and reconfigures
logging, which must not touch the pytest process) with two small services that only wait, fail or
return, so what is tested is the runner's own rule: a group ends together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ridehail.catalog import DEFAULT_SHARED_PROCESSES, STACK_ORDER, process_groups
from ridehail.common.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]


def test_the_default_shares_the_light_services_and_keeps_the_latency_paths_alone() -> None:
    assert CommonSettings.model_fields["shared_processes"].default == DEFAULT_SHARED_PROCESSES
    groups = process_groups(DEFAULT_SHARED_PROCESSES)
    assert groups == [("auth", "pricing", "simulator"), ("matching",), ("gateway",)]


def test_none_means_one_process_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    assert process_groups("none") == process_groups("") == [(name,) for name in STACK_ORDER]
    # an empty variable is ignored (the default holds), so "none" is how the environment says it
    monkeypatch.setenv("RIDEHAIL_SHARED_PROCESSES", "")
    assert CommonSettings().shared_processes == DEFAULT_SHARED_PROCESSES
    monkeypatch.setenv("RIDEHAIL_SHARED_PROCESSES", "none")
    assert process_groups(CommonSettings().shared_processes) == [(name,) for name in STACK_ORDER]


def test_only_the_services_asked_for_are_kept() -> None:
    assert process_groups("auth+pricing+simulator", ("auth", "matching", "simulator")) == [
        ("auth", "simulator"),
        ("matching",),
    ]
    assert process_groups("pricing+simulator", ("gateway",)) == [("gateway",)]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("auth+nobody", "'nobody' is not a service"),
        ("auth+pricing,pricing", "'pricing' is named twice"),
        ("ingest+auth", "'ingest' is not a service of the stack"),
    ],
)
def test_a_bad_spec_names_the_service(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        process_groups(spec)


@given(
    st.permutations(STACK_ORDER),
    st.lists(st.integers(0, 4), min_size=len(STACK_ORDER), max_size=len(STACK_ORDER)),
    st.sets(st.sampled_from(STACK_ORDER), min_size=1),
)
def test_every_service_asked_for_runs_in_exactly_one_process_in_stack_order(
    names: list[str], cuts: list[int], wanted: set[str]
) -> None:
    buckets: dict[int, list[str]] = {}
    for name, bucket in zip(names, cuts, strict=True):
        buckets.setdefault(bucket, []).append(name)
    spec = ",".join("+".join(group) for group in buckets.values())
    services = tuple(n for n in STACK_ORDER if n in wanted)
    groups = process_groups(spec, services)
    flat = [name for group in groups for name in group]
    assert sorted(flat) == sorted(services)
    assert all(list(g) == sorted(g, key=STACK_ORDER.index) for g in groups)
    assert [g[0] for g in groups] == sorted((g[0] for g in groups), key=STACK_ORDER.index)


def test_an_unknown_group_is_refused_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDEHAIL_SHARED_PROCESSES", "auth+nobody")
    with pytest.raises(ValueError, match="nobody"):
        CommonSettings()


# -- the runner ---------------------------------------------------------------------------------------

RUNNER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from ridehail.common.service import ServiceRun, run_services
    from ridehail.common.settings import CommonSettings

    marks = Path(sys.argv[1])
    mode = sys.argv[2]

    async def waits(settings, stop):
        (marks / "waits-started").touch()
        await stop.wait()
        (marks / "waits-stopped").touch()

    async def other(settings, stop):
        (marks / "other-started").touch()
        await asyncio.sleep(0.3)
        if mode == "fail":
            raise RuntimeError("pricing broke")
        if mode == "return":
            return
        if mode == "self-stop":  # what pricing and the simulator do when one of their tasks fails
            stop.set()
            return
        if mode == "exit":  # what uvicorn does when it cannot bind its port
            sys.exit(3)
        await stop.wait()

    run_services([ServiceRun("auth", CommonSettings, waits), ServiceRun("pricing", CommonSettings, other)])
    """
)


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env["PYTHONPATH"] = str(REPO / "services")
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), mode],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_service_that_fails_stops_its_neighbours_and_the_process_exits_non_zero(tmp_path: Path) -> None:
    proc = _start(tmp_path, "fail")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode not in (0, None), out
    assert "pricing broke" in out
    assert (tmp_path / "waits-stopped").exists(), "the neighbour was not stopped: " + out


def test_a_service_that_returns_unasked_ends_the_group_with_exit_code_1(tmp_path: Path) -> None:
    proc = _start(tmp_path, "return")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "service_ended_unasked" in out and "services=pricing" in out, out
    assert (tmp_path / "waits-stopped").exists(), out


@pytest.mark.parametrize("mode", ["self-stop", "exit"])
def test_a_service_that_stops_itself_or_exits_ends_the_group_with_exit_code_1(tmp_path: Path, mode: str) -> None:
    """Its own stop event is its own: the neighbour sees it only through the runner, which ends the
    group as a failure (a shared stop event would have looked like a clean shutdown, exit 0)."""
    proc = _start(tmp_path, mode)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "service_ended_unasked" in out and "services=pricing" in out, out
    assert (tmp_path / "waits-stopped").exists(), out


def test_sigterm_stops_every_service_and_the_process_exits_zero(tmp_path: Path) -> None:
    proc = _start(tmp_path, "wait")
    deadline = time.monotonic() + 30
    while not ((tmp_path / "waits-started").exists() and (tmp_path / "other-started").exists()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert (tmp_path / "waits-stopped").exists(), out
    lines = [line for line in out.splitlines() if "service_stopped" in line]
    assert any("service=auth" in line for line in lines) and any("service=pricing" in line for line in lines), out


def test_the_gateway_does_not_load_the_road_graph_until_a_quote_asks() -> None:
    code = "import sys, ridehail.gateway.main; print(sorted(m for m in ('scipy', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_launcher_refuses_an_unknown_or_repeated_service() -> None:
    for arg in ("nobody", "auth+auth", "auth+"):
        done = subprocess.run(
            [sys.executable, "-m", "ridehail.serve", arg], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2, (arg, done.stderr)
        assert "usage: python -m ridehail.serve SERVICE[+SERVICE...]" in done.stderr
