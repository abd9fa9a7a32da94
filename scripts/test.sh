#!/usr/bin/env bash
# The test command: install what is needed, lint, then run unit, contract, integration and e2e
# tests against a real embedded broker, real Postgres (a throw-away database) and real Chromium.
# Benchmarks are not part of it (`ridehail bench ...`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh --test

echo "== ruff"
.venv/bin/ruff check .

if [ -z "${RIDEHAIL_TEST_ADMIN_URL:-}" ]; then
  if ! .venv/bin/python -c "import asyncio, asyncpg; asyncio.run(asyncpg.connect('postgresql://postgres@127.0.0.1:5432/postgres', timeout=3))" 2>/dev/null; then
    echo "no Postgres on 127.0.0.1:5432: starting an embedded one for the tests"
    RIDEHAIL_TEST_ADMIN_URL=$(.venv/bin/python scripts/embedded_pg_for_tests.py)
    export RIDEHAIL_TEST_ADMIN_URL
  fi
fi

echo "== pytest"
mkdir -p test-artifacts
set +e
.venv/bin/python -m pytest -m "not bench" --junitxml=test-artifacts/junit.xml "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
# One summary line at the very end (library noise printed at interpreter exit can follow pytest's).
.venv/bin/python - <<'PY' || true
import xml.etree.ElementTree as ET
root = ET.parse("test-artifacts/junit.xml").getroot()
suites = [root] if root.tag == "testsuite" else list(root)
n = lambda k: sum(int(s.get(k, 0)) for s in suites)
failed = n("failures") + n("errors")
print(f"tests: {n('tests') - failed - n('skipped')} passed, {failed} failed, {n('skipped')} skipped")
PY
exit "$code"
