#!/usr/bin/env python3
"""Print (and kill) processes the test run left behind.

scripts/test.sh exports ``TEST_RUN_ID`` before the first layer; every process the tests start
(services, brokers, Postgres) inherits it. Whatever still carries this run's id after the last
layer is a leak: it is listed and killed. Processes of other runs (a `make up` in another
terminal) carry no such id and are left alone.
"""

from __future__ import annotations

import os
import sys

import psutil


def main() -> int:
    run_id = os.environ.get("TEST_RUN_ID")
    if not run_id:
        print("TEST_RUN_ID is not set", file=sys.stderr)
        return 2
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in spared:
            continue
        try:
            if proc.environ().get("TEST_RUN_ID") == run_id:
                found.append(proc)
        except psutil.Error:
            continue
    for proc in found:
        try:
            print(f"  pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(found, timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
