#!/usr/bin/env bash
# Run every benchmark at its documented size; results go to docs/bench/*.json (and
# docs/experiments/ for the REST-vs-events experiments). Run it on a quiet machine: the numbers
# follow the load (each JSON records the load average).
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/ridehail
mkdir -p docs/bench
echo "load before: $(uptime)"
$R bench simulator --drivers 10000 --seconds 20 --json docs/bench/simulator.json
$R bench matching --instances 1,2,4 --cpu-quota 0.15 --json docs/bench/matching.json  # the scale phase needs root (cgroup CPU quotas)
$R bench offers --json docs/bench/offers.json
$R bench auth --json docs/bench/auth.json
$R bench gateway --drivers 10000 --clients 100 --json docs/bench/gateway.json
$R bench map --cars 10000 --seconds 30 --json docs/bench/map.json
$R bench map --cars 10000 --seconds 30 --renderer markers --json docs/bench/map-markers.json
$R bench replay --json docs/bench/replay.json
$R bench pricing --json docs/bench/pricing.json
$R bench stack --drivers 1000 --rides-per-s 10 --seconds 60 --json docs/bench/stack-1000.json
$R bench stack --drivers 3000 --rides-per-s 10 --seconds 60 --json docs/bench/stack-3000.json
$R bench stack --drivers 3000 --rides-per-s 10 --seconds 60 --broker kafka --json docs/bench/stack-3000-kafka.json
$R bench stack --drivers 3000 --rides-per-s 10 --seconds 300 --json docs/bench/stack-3000-300s.json
$R bench stack --drivers 3000 --rides-per-s 10 --seconds 300 --broker kafka --json docs/bench/stack-3000-300s-kafka.json
scripts/run_experiments.sh
echo "load after: $(uptime)"
