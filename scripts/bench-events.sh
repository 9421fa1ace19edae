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
#
# Then event → visible in a query (query-time history, `ur events --es-url`):
# a local Elasticsearch is started (scripts/elasticsearch.sh; skipped with
# BENCH_LIVE=0), the server restarted with --es-url, and the `live-latency`
# example posts usage events of fresh users and polls each history as a query
# reads it, idle, at a fixed load (BENCH_LIVE_RATE single events/s from 16
# clients, open loop, every event a new user; default 5000, 0 skips it) and
# under the saturating 16-client single-event load; p50/p99 printed. Each
# start replays the log's events after the checkpoint (after the first
# round: the last ~10 s of the previous round's load): its count and
# duration are printed.
# BENCH_OLD=DIR (a directory holding another build's `ur`, e.g. a copy of
# target/release/ur from before a change) runs the same two measurements
# with it too, on a fresh live index each, for a side-by-side comparison.
# The server logs each live write at debug level (RUST_LOG=ur::events::live=debug):
# BENCH_LIVE_LOG=FILE keeps those lines (events, users cached/read/created,
# waited_ms, mget_ms, bulk_ms per flush).
# BENCH_THROUGHPUT=0 skips the throughput runs; BENCH_LIVE_ROUNDS=N repeats
# the live measurements N times (this build and BENCH_OLD alternating).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release --bin ur --example events-load --example live-latency -q
target=${CARGO_TARGET_DIR:-target}/release
root=${BENCH_ROOT:-$(mktemp -d)}/events
key=$("$target/ur" app new bench --root "$root" 2>/dev/null)
log=$(mktemp)
server=
es_data=
es_dir=
cleanup() {
  [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  [ -n "$es_data" ] && { scripts/elasticsearch.sh stop --data "$es_data" >/dev/null 2>&1 || true; rm -rf "$es_dir"; }
}
trap cleanup EXIT
start_server() {
  : >"$log"
  "${UR:-$target/ur}" events --root "$root" --listen 127.0.0.1:0 "$@" 2>"$log" &
  server=$!
  addr=
  for _ in $(seq 100); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | sed 's|.*http://||' || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$log"; exit 1; }
}
start_server
echo "ur events on $addr, root $root, $(nproc) cores, ${secs}s per run"
for batch in 1 50; do
  [ "${BENCH_THROUGHPUT:-1}" = 0 ] && break
  for clients in 1 16; do
    "$target/examples/events-load" --addr "$addr" --key "$key" --clients "$clients" --batch "$batch" --seconds "$secs"
  done
done

[ "${BENCH_LIVE:-1}" = 0 ] && exit 0
kill "$server"; wait "$server" 2>/dev/null || true; server=
es_dir=$(mktemp -d); chmod 755 "$es_dir"   # the ES user must reach it
es_data=$es_dir/es
es=$(scripts/elasticsearch.sh start --port $((30000 + RANDOM % 10000)) --data "$es_data" --heap 1g --quiet)
rate=${BENCH_LIVE_RATE:-5000}
# The start's replay: events re-applied, and how long from "live history on".
replay_took() {
  local on done n
  on=$(grep -m1 'live history on' "$log" | cut -c1-27)
  done=$(grep -m1 're-applied the log' "$log" || true)
  [ -n "$done" ] || { echo "[$1] restart replay: not finished"; return 0; }
  n=$(echo "$done" | grep -o 'events=[0-9]*' | head -1)
  echo "[$1] restart replay: $n in $(awk "BEGIN { printf \"%.2f\", $(date -d "$(echo "$done" | cut -c1-27)" +%s.%N) - $(date -d "$on" +%s.%N) }") s"
}
under_load() { # description [events-load options]: probes while 16 clients send single events
  local what=$1; shift
  "$target/examples/events-load" --addr "$addr" --key "$key" --clients 16 --batch 1 "$@" --seconds "$((secs + 5))" &
  local load=$!
  sleep 2
  echo "[$label] ... $what (every event a new user):"
  "$target/examples/live-latency" --addr "$addr" --key "$key" --es "$es" --engine jobs/handmade.json --samples 200
  wait "$load"
  sleep 1
}
live_run() {
  local label=$1 bin=$2
  curl -s -XDELETE "$es/urindex_users_live" >/dev/null || true
  UR=$bin RUST_LOG=ur=info,ur::events::live=debug start_server -e jobs/handmade.json --es-url "$es" --live-app bench
  echo "[$label] event → visible in a query (live history in Elasticsearch $es):"
  "$target/examples/live-latency" --addr "$addr" --key "$key" --es "$es" --engine jobs/handmade.json --samples 200
  replay_took "$label"
  [ "$rate" != 0 ] && under_load "at a fixed load of $rate single events/s from 16 clients" --rate "$rate"
  under_load "under the 16-client single-event load"
  kill "$server"; wait "$server" 2>/dev/null || true; server=; [ -n "${BENCH_SERVER_LOG:-}" ] && cp "$log" "$BENCH_SERVER_LOG-$label"
  [ -n "${BENCH_LIVE_LOG:-}" ] && grep 'live flush' "$log" | sed "s/^/[$label] /" >>"$BENCH_LIVE_LOG"
  return 0
}
for _ in $(seq "${BENCH_LIVE_ROUNDS:-1}"); do
  live_run this "$target/ur"
  [ -n "${BENCH_OLD:-}" ] && live_run old "$BENCH_OLD/ur"
done
exit 0
