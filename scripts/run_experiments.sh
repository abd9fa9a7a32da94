#!/usr/bin/env bash
# Regenerate every number and plot in docs/experiments/ (about 10 minutes on 2 cores):
#   bench ingest  -> docs/experiments/ingest.json  + ingest.png
#   bench outage  -> docs/experiments/outage.json  + outage.png
# Everything runs against a private embedded broker and a private embedded Postgres in a temp
# folder; the machine's own Postgres on 5432 is never touched. Set OUTAGE_SECONDS to shorten.
set -euo pipefail
cd "$(dirname "$0")/.."
RIDEHAIL="${RIDEHAIL:-.venv/bin/ridehail}"
[ -x "$RIDEHAIL" ] || RIDEHAIL=ridehail
OUT="${OUT:-docs/experiments}"
OUTAGE_SECONDS="${OUTAGE_SECONDS:-12}"  # the bench outage default (sized for its 15-minute run)
STEPS="${STEPS:-500,1000,2000,5000,10000,20000,50000}"
mkdir -p "$OUT"
echo "machine load before: $(uptime)"
start=$(date +%s)
"$RIDEHAIL" bench ingest --steps "$STEPS" --json "$OUT/ingest.json" --plot "$OUT/ingest.png"
"$RIDEHAIL" bench outage --outage-seconds "$OUTAGE_SECONDS" --json "$OUT/outage.json" --plot "$OUT/outage.png"
echo "machine load after: $(uptime)"
echo "done in $(( $(date +%s) - start )) s: $OUT/{ingest,outage}.{json,png}"
