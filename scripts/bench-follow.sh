#!/usr/bin/env bash
# Resident training (`ur-train --follow`) against full and cron-incremental
# trainings, side by side in one run, on the 10M-event synthetic set:
#  - a full training (no state), and cron runs with --state adding 1% then 0.1%;
#  - `--follow` with the default --drift 0.01 and with --drift 0 (exact):
#    the first training, then updates adding the same 1% and 0.1%, and a
#    further 0.1% in which 5% of the events name new items;
#  - each follow model against a full training on the same files: byte
#    comparison and top-K overlap (scripts/topk-overlap.py).
#
#   scripts/bench-follow.sh [EVENTS_DIR] [ENGINE]   default: bench-data/10m jobs/shop.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench-data/10m}
ENGINE=${2:-jobs/shop.json}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin ur-train --example gen-events
BIN=$PWD/target/release/ur-train
GEN=$PWD/target/release/examples/gen-events
[ -d "$DATA" ] || $GEN --events 10000000 --out "$DATA" --files 16
NOW=2026-01-15T12:00:00Z
EVENTS=$(cat "$DATA"/*/* | wc -l)
$GEN --events $((EVENTS / 100)) --seed 11 --files 1 --out "$WORK/inc1" >/dev/null 2>&1
$GEN --events $((EVENTS / 1000)) --seed 12 --files 1 --out "$WORK/inc01" >/dev/null 2>&1
$GEN --events $((EVENTS / 1000)) --seed 13 --files 1 --out "$WORK/inc01n" >/dev/null 2>&1
# 5% of the third increment's events name items never seen.
awk 'NR % 20 == 0 { sub(/"targetEntityId":"item-/, "\"targetEntityId\":\"new-item-") } 1' \
  "$WORK"/inc01n/*/events.jsonl > "$WORK/inc01n.jsonl"
INCS=("$WORK/inc1/part=000/events.jsonl" "$WORK/inc01/part=000/events.jsonl" "$WORK/inc01n.jsonl")
NAMES=("+1% ($((EVENTS / 100)) events)" "+0.1% ($((EVENTS / 1000)) events)" "+0.1% with new items")

base() { # dir: links to the base files
  mkdir -p "$1"
  for f in "$DATA"/*/*; do ln -s "$(realpath "$f")" "$1/base-$(basename "$(dirname "$f")")-$(basename "$f")"; done
}
add() { cp "$2" "$1/.tmp" && mv "$1/.tmp" "$1/inc$3.jsonl"; } # dir file n: appears at once
secs() { echo "$2 - $1" | bc; }
train() { $BIN -q --no-progress -e "$ENGINE" --now $NOW -w 2 "$@"; }
cat "$DATA"/*/* "${INCS[@]}" > /dev/null

# Full trainings on each prefix of the increments: the reference models.
base "$WORK/all"
s=$(date +%s.%N); train -i "$WORK/all" -o "$WORK/full0"; e=$(date +%s.%N)
FULL=$(secs "$s" "$e")
for n in 0 1 2; do
  add "$WORK/all" "${INCS[$n]}" $n
  train -i "$WORK/all" -o "$WORK/full$((n + 1))"
done

echo "| run | wall s | vs full |"
echo "|---|---|---|"
row() { printf '| %s | %.3f | %.1f%% |\n' "$1" "$2" "$(echo "100 * $2 / $FULL" | bc -l)"; }
row "full training ($EVENTS events)" "$FULL"

# Cron: --state, a new process per run.
base "$WORK/cron"
s=$(date +%s.%N); train -i "$WORK/cron" -o "$WORK/cron-model" --state "$WORK/cron-state"; e=$(date +%s.%N)
row "cron: full training writing the state" "$(secs "$s" "$e")"
for n in 0 1 2; do
  add "$WORK/cron" "${INCS[$n]}" $n
  s=$(date +%s.%N); train -i "$WORK/cron" -o "$WORK/cron-model" --state "$WORK/cron-state"; e=$(date +%s.%N)
  row "cron: ${NAMES[$n]}" "$(secs "$s" "$e")"
done
cmp -s "$WORK/cron-model/items.jsonl" "$WORK/full3/items.jsonl" && echo "(cron model identical to the full training)"

# Follow: one process; each update's wall time as ur-train reports it.
follow() { # label drift
  local dir=$WORK/follow-$2
  base "$dir/in"
  $BIN --no-progress -e "$ENGINE" --now $NOW -w 2 -i "$dir/in" -o "$dir/model" \
    --follow 0.1s --drift "$2" --max-updates 4 2> "$dir/log" &
  local pid=$!
  local tick
  # (grep, not python: polling must not take a core from the update being measured)
  tick() { grep -o '"tick": [0-9]*' "$dir/model/manifest.json" 2>/dev/null | grep -o '[0-9]*$' || echo -1; }
  for n in 0 1 2; do
    while [ "$(tick)" != "$n" ]; do sleep 0.05; done
    if [ "$n" -gt 0 ]; then
      python3 scripts/topk-overlap.py "$dir/model" "$WORK/full$n" > "$dir/overlap-$n"
      cmp -s "$dir/model/items.jsonl" "$WORK/full$n/items.jsonl" && echo BYTE-IDENTICAL >> "$dir/overlap-$n"
    fi
    add "$dir/in" "${INCS[$n]}" $n
  done
  wait $pid
  python3 scripts/topk-overlap.py "$dir/model" "$WORK/full3" > "$dir/overlap-3"
  cmp -s "$dir/model/items.jsonl" "$WORK/full3/items.jsonl" && echo BYTE-IDENTICAL >> "$dir/overlap-3"
  row "follow --drift $2: first training" "$(sed -n 's/^training 0: \(.*\)s.*/\1/p' "$dir/log")"
  for n in 1 2 3; do
    local t rescored
    t=$(sed -n "s/^update $n: \([0-9.]*\)s.*/\1/p" "$dir/log")
    rescored=$(grep '^update:' "$dir/log" | sed -n "${n}p" | sed 's/.*count changes, //')
    row "follow --drift $2: ${NAMES[$((n - 1))]}; $rescored" "$t"
  done
  for n in 1 2 3; do
    local same="differs from the full training"
    grep -q BYTE-IDENTICAL "$dir/overlap-$n" && same="byte-identical to the full training"
    echo "  after update $n: $same; $(grep -v '^documents\|BYTE-IDENTICAL' "$dir/overlap-$n" | tr '\n' ';')"
  done
  echo "  peak RSS: $(python3 -c "import json;print(json.load(open('$dir/model/manifest.json'))['peakRssBytes'] // 2**20)") MiB (full training: $(python3 -c "import json;print(json.load(open('$WORK/full0/manifest.json'))['peakRssBytes'] // 2**20)") MiB)"
}
follow "default" 0.01
follow "exact" 0

# How far the served model gets from a full training as N drifts: four more
# +1% increments with --drift 1 (rows never all re-scored), the top-K overlap
# with a full training after each, and N's drift since the first training.
echo
echo "drift study: +1% increments with --drift 1 (no full re-score)"
dir=$WORK/drift
base "$dir/in"
base "$dir/ref"
for n in 1 2 3 4; do $GEN --events $((EVENTS / 100)) --seed $((20 + n)) --files 1 --out "$WORK/d$n" >/dev/null 2>&1; done
$BIN --no-progress -e "$ENGINE" --now $NOW -w 2 -i "$dir/in" -o "$dir/model" --follow 0.1s --drift 1 --max-updates 5 2> "$dir/log" &
pid=$!
tick() { grep -o '"tick": [0-9]*' "$dir/model/manifest.json" 2>/dev/null | grep -o '[0-9]*$' || echo -1; }
n0=""
for n in 0 1 2 3 4; do
  while [ "$(tick)" != "$n" ]; do sleep 0.05; done
  nn=$(grep -o '"n": [0-9]*' "$dir/model/manifest.json" | head -1 | grep -o '[0-9]*$')
  [ -n "$n0" ] || n0=$nn
  if [ "$n" -gt 0 ]; then
    train -i "$dir/ref" -o "$dir/full$n"
    echo "after $n × 1%: N drift $(echo "scale=2; 100 * ($nn - $n0) / $n0" | bc)%; $(python3 scripts/topk-overlap.py "$dir/model" "$dir/full$n" | grep -v '^documents' | tr '\n' ';')"
  fi
  if [ "$n" -lt 4 ]; then
    add "$dir/in" "$WORK/d$((n + 1))/part=000/events.jsonl" "d$n"
    add "$dir/ref" "$WORK/d$((n + 1))/part=000/events.jsonl" "d$n"
  fi
done
wait $pid
