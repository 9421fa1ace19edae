#!/usr/bin/env bash
# Elasticsearch benchmarks (issue 4), on a local single-node Elasticsearch
# started here (scripts/elasticsearch.sh):
#  - bulk indexing rate of the model and user-history documents (ur-train --es-url);
#  - `ur serve` query latency p50/p99 with 1 and 16 concurrent clients, load
#    from a separate process (examples/query_load.rs) on loopback, bounded in
#    count and time.
#
#   scripts/bench-es.sh [EVENTS_DIR] [ENGINE]   default: bench-data/10m jobs/shop.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-bench-data/10m}
ENGINE=${2:-jobs/shop.json}
WORK=$(mktemp -d); chmod 755 "$WORK"
ES_PORT=$((30000 + RANDOM % 10000)); UR_PORT=$((ES_PORT + 1))
cleanup() {
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
  scripts/elasticsearch.sh stop --data "$WORK/es" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release --quiet --bin ur-train --bin ur --example gen-events --example query-load
[ -d "$DATA" ] || ./target/release/examples/gen-events --events 10000000 --out "$DATA" --files 16
ES=$(scripts/elasticsearch.sh start --port $ES_PORT --data "$WORK/es" --heap 1g --quiet)
echo "Elasticsearch $ES"

for run in 1 2; do
  ./target/release/ur-train -q --no-progress -e "$ENGINE" -i "$DATA" --es-url "$ES" --now 2026-01-15T12:00:00Z \
      -o "$WORK/model-$run" --workers 2
  python3 - "$WORK/model-$run/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
docs, t = m["model"]["documents"], m["timings"]
print(f"run: {docs} item documents + user-history documents; documents+bulk phase {t['write']:.2f} s, total {t['total']:.2f} s")
PY
done
curl -s "$ES/_cat/indices?h=index,docs.count,store.size&s=index"
users=$(python3 -c "import json;print(json.load(open('$WORK/model-2/manifest.json'))['model']['users'])")
items=$(python3 -c "import json;print(json.load(open('$WORK/model-2/manifest.json'))['model']['items'])")

./target/release/ur -e "$ENGINE" --es-url "$ES" serve --listen 127.0.0.1:$UR_PORT 2>/dev/null &
SERVE_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$UR_PORT/health" && break; sleep 0.1; done
./target/release/examples/query-load --addr 127.0.0.1:$UR_PORT --clients 1 --requests 300 --seconds 10 --users "$users" --items "$items" >/dev/null # warm-up
for c in 1 16; do
  ./target/release/examples/query-load --addr 127.0.0.1:$UR_PORT --clients $c --requests 20000 --seconds 20 --users "$users" --items "$items"
done
