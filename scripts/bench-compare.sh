#!/usr/bin/env bash
# Two ur-train binaries side by side in one run: the bench.sh rows (wall,
# read, CCO, read rate, peak RSS per event) for each, interleaved round by
# round so both see the same machine load, plus a byte comparison of their
# models. Use it to show that a change is within noise (or how far it is not).
#
#   scripts/bench-compare.sh OLD_BIN NEW_BIN [EVENTS_DIR] [ROUNDS]
#
# EVENTS_DIR defaults to bench-data/10m (generated like bench.sh: 10M events);
# ROUNDS defaults to 3. Prints a markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 DATA=${3:-bench-data/10m} ROUNDS=${4:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ -x "$OLD" ] && [ -x "$NEW" ] || { echo "usage: $0 OLD_BIN NEW_BIN [EVENTS_DIR] [ROUNDS]" >&2; exit 2; }
if [ ! -d "$DATA" ]; then
  cargo build --release --quiet --example gen-events
  echo "generating $DATA ..." >&2
  ./target/release/examples/gen-events --events 10000000 --out "$DATA" --files 16
fi
EVENTS=$(cat "$DATA"/*/* 2>/dev/null | wc -l || true)
echo "machine: $(nproc) cores; data: $DATA, $EVENTS lines; $ROUNDS rounds, old and new alternating"

run() { # label binary engine workers round
  local label=$1 bin=$2 engine=$3 workers=$4 round=$5
  local dir="$OUT/$label-$(basename "$engine" .json)-$workers-$round"
  /usr/bin/time -f "%e %M" -o "$dir.time" "$bin" -q --no-progress \
    -e "$engine" -i "$DATA" -o "$dir" -w "$workers" --now 2026-01-15T12:00:00Z
  python3 - "$dir" "$label" "$engine" "$workers" "$EVENTS" <<'PY'
import json, sys
d, label, engine, workers, events = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
m = json.load(open(d + "/manifest.json"))
wall, rss_kb = open(d + ".time").read().split()
t = m["timings"]
print(f"| {label} | {engine} | {workers} | {float(wall):.2f} | {t['read']:.2f} | {t['cco']:.2f} | "
      f"{events / t['read'] / 1e6:.2f} | {int(rss_kb) * 1024 / events:.1f} |")
PY
  [ "$label" = old ] || cmp -s "$dir/items.jsonl" "$OUT/old-${dir#"$OUT"/new-}/items.jsonl" \
    || { echo "MODELS DIFFER: $dir" >&2; exit 1; }
}

cat "$DATA"/*/* > /dev/null # warm the page cache for both
echo
echo "| binary | engine | workers | wall s | read s | CCO s | M events/s read | peak RSS B/event |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for engine in jobs/bench-purchase.json jobs/shop.json; do
    run old "$OLD" "$engine" 2 "$round"
    run new "$NEW" "$engine" 2 "$round"
  done
done
echo
echo "models: byte-identical in every round"
