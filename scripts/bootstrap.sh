#!/usr/bin/env bash
# Install everything ridehail needs from the project's own files, idempotently:
#   uv (pinned, hash-checked, into .tools/uv), the virtualenv
#   (.venv) exactly as uv.lock says (runtime + dev extras), and Leaflet from npm (package-lock.json).
# With --test it also installs the npm packages of tests/interop (jose, from its package-lock.json)
# and what the tests use from Debian (chromium for the browser tests, docker-compose to validate
# docker-compose.yml) when they are missing and we may install them.
#
# `uv sync --locked` refuses to run when pyproject.toml and uv.lock disagree: run `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_tools=0
[ "${1:-}" = "--test" ] && want_test_tools=1

UV_VERSION=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' scripts/uv-requirements.txt)

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "ridehail needs Python >= 3.11 (found: $("$PY" --version 2>&1 || echo none)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# -- uv ----------------------------------------------------------------------------------------
UV=.tools/uv/bin/uv
if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/uv (pip, hash-checked)"
  rm -rf .tools/uv
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --require-hashes --only-binary=:all: --target .tools/uv -r scripts/uv-requirements.txt
fi
export UV_PYTHON_DOWNLOADS=never   # use the Python found above, never fetch one

# -- Python packages, exactly as locked --------------------------------------------------------
echo "bootstrap: syncing .venv with uv.lock"
if ! "$UV" sync --locked --extra dev --python "$PY" --quiet; then
  echo "bootstrap: uv.lock does not match pyproject.toml (or could not be installed): run 'make lock' after changing dependencies" >&2
  exit 1
fi

# -- npm: Leaflet for the map; with --test also the interoperability tests' packages (jose) ----
npm_install() {  # npm ci in folder $1 when its package files changed since the last install
  local folder=$1 what=$2
  [ -f "$folder/package.json" ] || return 0
  local lock_digest npm_stamp
  lock_digest=$(cat "$folder/package.json" "$folder/package-lock.json" | sha256sum | cut -d' ' -f1)
  npm_stamp=$folder/node_modules/.ridehail-installed
  if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$lock_digest" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "bootstrap: npm is missing: install Node.js (>= 20) to get $what" >&2
      exit 1
    fi
    echo "bootstrap: installing $folder packages (npm ci)"
    npm ci --prefix "$folder" --no-audit --no-fund --loglevel=error
    echo "$lock_digest" > "$npm_stamp"
  fi
}
npm_install frontend "the map's Leaflet files"
if [ "$want_test_tools" = 1 ]; then
  npm_install tests/interop "jose for the token interoperability test"
fi

# -- Debian tools the tests use ----------------------------------------------------------------
if [ "$want_test_tools" = 1 ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing ${missing[*]} from Debian (apt-get)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bootstrap: ${missing[*]} missing and cannot be installed here (needs root + apt-get): the tests needing them will fail" >&2
    fi
  fi
fi
