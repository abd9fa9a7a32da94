#!/usr/bin/env bash
# Compare two values of one ridehail setting on the whole stack: `ridehail bench stack` at 3,000
# drivers and 10 rides/s, alternating A and B, REPEATS times each, every run on a fresh stack after
# REST seconds of rest (so one run's load does not start the next). One JSON per run in OUT_DIR:
#   scripts/bench_stack_ab.sh RIDEHAIL_PING_SLOTS 10 5 3 docs/bench/ping-slots
# Environment: DRIVERS (3000), RIDES_PER_S (10), RUN_SECONDS (60), REST (30). Run it on a quiet
# machine; each JSON records the load and the CPU steal.
set -euo pipefail
if [ $# -ne 5 ]; then
  echo "usage: $0 SETTING VALUE_A VALUE_B REPEATS OUT_DIR" >&2
  exit 2
fi
setting=$1 a=$2 b=$3 repeats=$4 out=$5
drivers=${DRIVERS:-3000} rides=${RIDES_PER_S:-10} seconds=${RUN_SECONDS:-60} rest=${REST:-30}
cd "$(dirname "$0")/.."
mkdir -p "$out"
name=$(echo "${setting#RIDEHAIL_}" | tr 'A-Z_' 'a-z-')
for i in $(seq 1 "$repeats"); do
  for value in "$a" "$b"; do
    sleep "$rest"
    echo "run $i, $setting=$value (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    .venv/bin/ridehail bench stack --drivers "$drivers" --rides-per-s "$rides" --seconds "$seconds" \
      --set "$setting=$value" --json "$out/s$drivers-$name$value-$i.json"
  done
done
