#!/usr/bin/env bash
# Benchmarks ur-train against the Python `implicit` ItemItemRecommender (K=50,
# all cores) on the same events, side by side in one run, and the CCO pass
# alone against a generic join + count. Prints a markdown table for
# docs/benchmarks.md.
#
#   scripts/bench.sh [EVENTS_DIR]     default: bench-data/10m (generated: 10M events)
#
# Needs: a Rust toolchain, python3 with pip (installs scripts/bench-requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench-data/10m}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo build --release --quiet --bin ur-train --example gen-events
if [ ! -d "$DATA" ]; then
  echo "generating $DATA ..." >&2
  ./target/release/examples/gen-events --events 10000000 --out "$DATA" --files 16
fi
python3 -m pip install --quiet -r scripts/bench-requirements.txt

EVENTS=$(cat "$DATA"/*/* 2>/dev/null | wc -l || true)
BYTES=$(du -sb "$DATA" | cut -f1)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "data: $DATA, $EVENTS lines, $BYTES bytes"
cat "$DATA"/*/* > /dev/null # warm the page cache for both sides

run_ur() { # name engine workers
  local name=$1 engine=$2 workers=$3
  /usr/bin/time -f "%e %M" -o "$OUT/$name.time" ./target/release/ur-train -q --no-progress \
    -e "$engine" -i "$DATA" -o "$OUT/$name" -w "$workers" --now 2026-01-15T12:00:00Z
  python3 - "$OUT/$name" "$OUT/$name.time" "$name" "$EVENTS" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
wall, rss_kb = open(sys.argv[2]).read().split()
t, model, events = m["timings"], m["model"], int(sys.argv[4])
print(f"| {sys.argv[3]} | {float(wall):.2f} | {t['read']:.2f} | {t['cco']:.2f} | "
      f"{events / t['read'] / 1e6:.2f} | {int(rss_kb) * 1024 / events:.1f} | "
      f"{model['pair_visits']:,} | {t['cco'] * 1e9 / max(model['pair_visits'], 1):.1f} |")
PY
}

run_py() { # name parser
  local name=$1 parser=$2
  /usr/bin/time -f "%e %M" -o "$OUT/$name.time" python3 scripts/bench_implicit.py \
    --input "$DATA" --event purchase --k 50 --parser "$parser" > "$OUT/$name.json"
  python3 - "$OUT/$name.json" "$OUT/$name.time" "$name" "$EVENTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall, rss_kb = open(sys.argv[2]).read().split()
events = int(sys.argv[4])
print(f"| {sys.argv[3]} | {float(wall):.2f} | {r['read_s'] + r['csr_s']:.2f} | {r['fit_s']:.2f} | "
      f"{events / r['read_s'] / 1e6:.2f} | {int(rss_kb) * 1024 / events:.1f} | - | - |")
PY
}

echo
echo "| run | wall s | read s (py: + CSR) | CCO / fit s | M events/s read | peak RSS B/event | pair-visits | ns/pair-visit |"
echo "|---|---|---|---|---|---|---|---|"
run_ur "ur-train purchase only, 2 workers" jobs/bench-purchase.json 2
run_py "python json → CSR → implicit" json
run_py "python orjson → CSR → implicit" orjson
run_ur "ur-train purchase only, 1 worker" jobs/bench-purchase.json 1
run_ur "ur-train shop (3 indicators), 2 workers" jobs/shop.json 2
run_ur "ur-train shop (3 indicators), 1 worker" jobs/shop.json 1
echo
echo "CCO pass alone (cargo bench --bench cco):"
cargo bench --quiet --bench cco 2>/dev/null | sed 's/^/    /'
