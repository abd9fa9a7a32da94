#!/usr/bin/env bash
# Make data/recordings/sample-rush-hour.rhrec: a busy fleet with riders, from the real stack.
#
# Starts `ridehail up` (broker, Postgres, auth, matching, gateway, simulator with simulated riders
# requesting rides through the REST API) on free ports against a throw-away database, records the
# three ridehail topics for DURATION, then stops the stack and drops the database.
#
#   bash data/recordings/make-sample.sh [DURATION (default 3m)] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-3m}"
OUT="${2:-data/recordings/sample-rush-hour.rhrec}"
PY="${PYTHON:-.venv/bin/python}"
ADMIN="${RIDEHAIL_TEST_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DB="ridehail_sample_$$"
psql "$ADMIN" -qc "CREATE DATABASE \"$DB\""
STATE="$(mktemp -d)"
STACK_PID=""
cleanup() {
  if [ -n "$STACK_PID" ] && kill -0 "$STACK_PID" 2>/dev/null; then
    kill -INT "$STACK_PID"; wait "$STACK_PID" || true
  fi
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" || true
  rm -rf "$STATE"
}
trap cleanup EXIT

for name in $(env | grep -o '^RIDEHAIL_[A-Z_]*' || true); do unset "$name"; done
export RIDEHAIL_DATABASE_URL="${ADMIN%/*}/$DB"
export RIDEHAIL_STATE_DIR="$STATE"
export RIDEHAIL_BROKER_PORT="$(free_port)" RIDEHAIL_GATEWAY_PORT="$(free_port)" RIDEHAIL_GATEWAY_WS_PORT="$(free_port)"
export RIDEHAIL_AUTH_PORT="$(free_port)" RIDEHAIL_MATCHING_PORT="$(free_port)" RIDEHAIL_SIMULATOR_PORT="$(free_port)"
export RIDEHAIL_DRIVERS="${DRIVERS:-150}" RIDEHAIL_SEED="${SEED:-42}" RIDEHAIL_RIDERS_PER_MIN="${RIDERS_PER_MIN:-40}"
export RIDEHAIL_TIME_SCALE="${TIME_SCALE:-3}" RIDEHAIL_LOG_LEVEL=WARNING

"$PY" -m ridehail.cli up > "$STATE/up.log" 2>&1 &
STACK_PID=$!
for _ in $(seq 1 180); do
  grep -q "ridehail up in" "$STATE/up.log" && break
  kill -0 "$STACK_PID" 2>/dev/null || { cat "$STATE/up.log"; exit 1; }
  sleep 0.5
done
grep -q "ridehail up in" "$STATE/up.log" || { echo "stack not ready"; cat "$STATE/up.log"; exit 1; }

"$PY" -m ridehail.cli record --out "$OUT" --duration "$DURATION"
"$PY" -m ridehail.cli replay "$OUT" --check
ls -l "$OUT"
