#!/usr/bin/env bash
# Cluster benchmarks (issue 3), side by side in one run on one machine:
#  - the speed-up of --workers 2 over --workers 1;
#  - 3 local processes x 1 worker (127.0.0.1/.2/.3) against 1 process x 3 workers;
#  - bytes exchanged between processes per input line.
#
#   scripts/bench-cluster.sh [EVENTS_DIR] [ENGINE]   default: bench-data/10m jobs/shop.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench-data/10m}
ENGINE=${2:-jobs/shop.json}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cargo build --release --quiet --bin ur-train --example gen-events
if [ ! -d "$DATA" ]; then
  ./target/release/examples/gen-events --events 10000000 --out "$DATA" --files 16
fi
BIN=./target/release/ur-train
NOW=2026-01-15T12:00:00Z
cat "$DATA"/*/* > /dev/null

report() { # name dir wall
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys, glob
m = json.load(open(sys.argv[2] + "/manifest.json"))
t = m["timings"]
print(f"| {sys.argv[1]} | {float(sys.argv[3]):.2f} | {t['read']:.2f} | {t['group'] + t['downsample']:.2f} | {t['cco']:.2f} | "
      f"{m['network']['bytesPerLine']:.1f} |")
PY
}
timed() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); echo "$e - $s" | bc; }

echo "| run | wall s | read s | group + sample s | cco s | bytes to other processes per line |"
echo "|---|---|---|---|---|---|"
for w in 1 2 3; do
  wall=$(timed $BIN -q --no-progress -e "$ENGINE" -i "$DATA" -o "$OUT/w$w" -w $w --now $NOW)
  report "1 process x $w workers" "$OUT/w$w" "$wall"
done
PORT=$((20000 + RANDOM % 20000))
UR_CLUSTER_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export UR_CLUSTER_SECRET
printf '127.0.0.1:%d\n127.0.0.2:%d\n127.0.0.3:%d\n' $PORT $PORT $PORT > "$OUT/hosts"
s=$(date +%s.%N)
for p in 0 1 2; do
  $BIN -q --no-progress -e "$ENGINE" -i "$DATA" -o "$OUT/p3" -w 1 --now $NOW --hosts "$OUT/hosts" --process $p &
done
wait
e=$(date +%s.%N)
report "3 processes x 1 worker" "$OUT/p3" "$(echo "$e - $s" | bc)"
cat "$OUT"/p3/items-*.jsonl | cmp -s - "$OUT/w1/items.jsonl" && echo "(3 x 1 documents identical to 1 x 1)"
