#!/usr/bin/env bash
# Regenerate every result, plot and claim in docs/experiments/ (under 40 minutes on 2 cores):
#   1. bench ingest  -> ingest.json + ingest.png   claims 1, 7  (arms and controls, 5 interleaved repeats)
#   2. bench outage  -> outage.json + outage.png   claims 2, 4, 5, 6  (3-node Kafka cluster; tansu as a labelled row)
#   3. bench scale   -> scale.json                 claim 3  (1, 2, 4 matching instances, 0.15 core each)
#   4. bench reply   -> reply.json  + reply.png    claim 8  (REST vs request/reply over Kafka)
#   5. bench claims  -> claims.json and the table at the top of README.md
# Everything runs against private brokers and a private embedded Postgres in temp folders. The
# Kafka cluster needs Java 17 + Maven (jars from Maven Central, cached in ~/.m2); the CPU quotas and
# the network-partition scenarios need root. Each bench prints one progress line per run.
# Shorter, for a look (one run per point, written to a temp folder): QUICK=1 scripts/run_experiments.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RIDEHAIL="${RIDEHAIL:-.venv/bin/ridehail}"
[ -x "$RIDEHAIL" ] || RIDEHAIL=ridehail
OUT="${OUT:-docs/experiments}"
if [ -n "${QUICK:-}" ] && [ "$OUT" = docs/experiments ]; then
  OUT=$(mktemp -d /tmp/ridehail-experiments-quick.XXXXXX)  # a look, never the committed results
  cp docs/experiments/README.md "$OUT/README.md"
  echo "QUICK=1: writing to $OUT, not docs/experiments" >&2
fi
mkdir -p "$OUT"

REPEATS="${REPEATS:-5}"
QUOTA=0.15
if [ "$(id -u)" != 0 ]; then
  QUOTA=0
  echo "not root: bench scale runs without a CPU quota (the machine's cores bound it instead)" >&2
fi
if [ -n "${QUICK:-}" ]; then
  REPEATS=1
fi

stages=5
start=$(date +%s)
stage() {
  echo
  echo "== [$1/$stages] $2   ($(( $(date +%s) - start )) s elapsed; load: $(cut -d' ' -f1-3 /proc/loadavg))"
}
echo "machine load before: $(uptime)"

stage 1 "bench ingest (claims 1 and 7)"
"$RIDEHAIL" bench ingest --repeats "$REPEATS" --json "$OUT/ingest.json" --plot "$OUT/ingest.png"

stage 2 "bench outage on the 3-node Kafka cluster, tansu as a labelled row (claims 2, 4, 5, 6)"
"$RIDEHAIL" bench outage --broker kafka,tansu --repeats "$REPEATS" --json "$OUT/outage.json" --plot "$OUT/outage.png"

stage 3 "bench scale: 1, 2, 4 matching instances at $QUOTA core each (claim 3)"
"$RIDEHAIL" bench scale --repeats "$REPEATS" --cpu-quota "$QUOTA" --json "$OUT/scale.json" >/dev/null

stage 4 "bench reply: REST vs request/reply over Kafka (claim 8)"
"$RIDEHAIL" bench reply --repeats "$REPEATS" --json "$OUT/reply.json" --plot "$OUT/reply.png"

stage 5 "bench claims"
"$RIDEHAIL" bench claims --results "$OUT" --readme "$OUT/README.md"

echo
echo "machine load after: $(uptime)"
echo "done in $(( $(date +%s) - start )) s: $OUT/{ingest,outage,scale,reply,claims}.json, plots, README table"
