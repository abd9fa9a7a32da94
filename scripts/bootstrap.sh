#!/usr/bin/env bash
# Install everything ridehail needs from the project's own files, idempotently:
#   the virtualenv (.venv) with the package and its dev extras, and Leaflet from npm.
# With --test it also installs what the tests use from Debian (chromium for the browser tests,
# docker-compose to validate docker-compose.yml) when they are missing and we may install them.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_tools=0
[ "${1:-}" = "--test" ] && want_test_tools=1

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "ridehail needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi

stamp=.venv/.ridehail-installed
digest=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "bootstrap: installing Python dependencies (pip install -e .[dev])"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$digest" > "$stamp"
fi

if [ -f frontend/package.json ]; then
  lock_digest=$(cat frontend/package.json frontend/package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
  npm_stamp=frontend/node_modules/.ridehail-installed
  if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$lock_digest" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "bootstrap: npm is missing: install Node.js (>= 18) to get the map's Leaflet files" >&2
      exit 1
    fi
    echo "bootstrap: installing frontend packages (npm ci)"
    npm ci --prefix frontend --no-audit --no-fund --loglevel=error
    echo "$lock_digest" > "$npm_stamp"
  fi
fi

if [ "$want_test_tools" = 1 ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing ${missing[*]} from Debian"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bootstrap: ${missing[*]} missing and cannot be installed here: the tests needing them will fail" >&2
    fi
  fi
fi
