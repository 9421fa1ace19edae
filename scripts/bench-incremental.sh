#!/usr/bin/env bash
# Incremental training benchmarks (issue 5), side by side in one run:
#  - the 10M-event synthetic set: a full training (with --state) against
#    incremental runs adding 1% and then 0.1% new events, and a full training
#    on everything to check the models are identical;
#  - Online Retail: months 1-12 then month 13 as an update, against a full
#    training on 13 months;
#  - the state's size on disk per event.
#
#   scripts/bench-incremental.sh [EVENTS_DIR] [ENGINE]   default: bench-data/10m jobs/shop.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench-data/10m}
ENGINE=${2:-jobs/shop.json}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin ur-train --example gen-events
BIN=./target/release/ur-train
GEN=./target/release/examples/gen-events
[ -d "$DATA" ] || $GEN --events 10000000 --out "$DATA" --files 16
NOW=2026-01-15T12:00:00Z
EVENTS=$(cat "$DATA"/*/* | wc -l)

# The input: links to the base files; increments are added as new files.
mkdir -p "$WORK/in"
for f in "$DATA"/*/*; do ln -s "$(realpath "$f")" "$WORK/in/base-$(basename "$(dirname "$f")")-$(basename "$f")"; done
$GEN --events $((EVENTS / 100)) --seed 11 --files 1 --out "$WORK/inc1" >/dev/null 2>&1
$GEN --events $((EVENTS / 1000)) --seed 12 --files 1 --out "$WORK/inc01" >/dev/null 2>&1
cat "$WORK"/in/* "$WORK"/inc1/*/* "$WORK"/inc01/*/* > /dev/null

run() { # label args...
  local label=$1; shift
  local s=$(date +%s.%N)
  $BIN -q --no-progress -e "$ENGINE" --now $NOW -w 2 "$@"
  local e=$(date +%s.%N)
  printf '| %s | %.2f |\n' "$label" "$(echo "$e - $s" | bc)"
}

echo "| run | wall s |"
echo "|---|---|"
run "full, no state ($EVENTS events)" -i "$WORK/in" -o "$WORK/plain"
run "full, writing the state" -i "$WORK/in" -o "$WORK/model" --state "$WORK/state"
STATE_BYTES=$(du -sb "$WORK/state" | cut -f1)
cp "$WORK"/inc1/*/* "$WORK/in/inc1.jsonl"
run "incremental +1% ($((EVENTS / 100)) events)" -i "$WORK/in" -o "$WORK/model" --state "$WORK/state"
cp "$WORK"/inc01/*/* "$WORK/in/inc01.jsonl"
run "incremental +0.1% ($((EVENTS / 1000)) events)" -i "$WORK/in" -o "$WORK/model" --state "$WORK/state"
run "full on everything (check)" -i "$WORK/in" -o "$WORK/check"
cmp -s "$WORK/model/items.jsonl" "$WORK/check/items.jsonl" && echo "(incremental model identical to the full one)"
echo "state: $STATE_BYTES bytes after the full run = $(echo "scale=1; $STATE_BYTES / $EVENTS" | bc) bytes per event"

# Online Retail: 12 months, then month 13.
mkdir -p "$WORK/retail"
for m in data/online-retail/month=*; do
  case $m in *2011-12) ;; *) cp -r "$m" "$WORK/retail/";; esac
done
RETAIL_ENGINE=$WORK/retail.json
cat > "$RETAIL_ENGINE" <<'JSON'
{"algorithms": [{"name": "ur", "params": {"indicators": [{"name": "purchase"}, {"name": "cancel"}, {"name": "country"}]}}]}
JSON
ENGINE=$RETAIL_ENGINE
NOW=2011-12-10T00:00:00Z
run "retail: months 1-12, writing the state" -i "$WORK/retail" -o "$WORK/r-model" --state "$WORK/r-state"
cp -r data/online-retail/month=2011-12 "$WORK/retail/"
run "retail: month 13 as an update" -i "$WORK/retail" -o "$WORK/r-model" --state "$WORK/r-state"
run "retail: full training on 13 months" -i "$WORK/retail" -o "$WORK/r-full"
cmp -s "$WORK/r-model/items.jsonl" "$WORK/r-full/items.jsonl" && echo "(retail: update identical to the full training)"
echo "retail state: $(du -sb "$WORK/r-state" | cut -f1) bytes for $(zcat data/online-retail/month=*/*.gz | wc -l) events"
