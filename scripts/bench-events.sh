#!/usr/bin/env bash
# Loopback benchmark of `ur events` with durability on (every 201 after
# fdatasync): events/s and acknowledgement latency p50/p99 with single
# events and with batches of 50, from 1 and 16 clients.
#
#   scripts/bench-events.sh [SECONDS_PER_RUN]   (default 10)
#
# Builds the release `ur` and the `events-load` example, starts the server on
# a fresh root in a temporary directory (set BENCH_ROOT to put it on the disk
# you want to measure), prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release --bin ur --example events-load -q
target=${CARGO_TARGET_DIR:-target}/release
root=${BENCH_ROOT:-$(mktemp -d)}/events
key=$("$target/ur" app new bench --root "$root" 2>/dev/null)
log=$(mktemp)
"$target/ur" events --root "$root" --listen 127.0.0.1:0 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | sed 's|.*http://||' || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; exit 1; }
echo "ur events on $addr, root $root, $(nproc) cores, ${secs}s per run"
for batch in 1 50; do
  for clients in 1 16; do
    "$target/examples/events-load" --addr "$addr" --key "$key" --clients "$clients" --batch "$batch" --seconds "$secs"
  done
done
