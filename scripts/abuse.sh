#!/usr/bin/env bash
# A bounded abuse run of `ur serve` on loopback (issue 13): while slow-loris
# connections trickle header bytes, oversized and malformed bodies arrive in
# a loop and 10x the concurrency limit floods POST /queries.json, one
# well-behaved client sends one query at a time; its p50/p99 latency and its
# errors are printed (recorded in docs/security.md). Elasticsearch is started
# here (scripts/elasticsearch.sh) and the handmade model trained into it.
#
#   scripts/abuse.sh [SECONDS]      default 20; debug binaries unless PROFILE=release
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-20}
PROFILE=${PROFILE:-debug}
IN_FLIGHT=16
WORK=$(mktemp -d); chmod 755 "$WORK"
ES_PORT=$((30000 + RANDOM % 10000)); UR_PORT=$((ES_PORT + 1))
cleanup() {
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
  scripts/elasticsearch.sh stop --data "$WORK/es" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin ur-train --bin ur; else cargo build --quiet --bin ur-train --bin ur; fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
ES=$(scripts/elasticsearch.sh start --port $ES_PORT --data "$WORK/es" --heap 512m --quiet)
"$BIN/ur-train" -q --no-progress -e jobs/handmade.json -i data/handmade/events.jsonl --es-url "$ES" \
    --now 2026-01-15T12:00:00Z -o "$WORK/model"
"$BIN/ur" -e jobs/handmade.json --es-url "$ES" serve --listen 127.0.0.1:$UR_PORT \
    --max-in-flight $IN_FLIGHT --max-connections 512 --header-timeout-ms 2000 --timeout-ms 2000 \
    2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$UR_PORT) 2>/dev/null && break; sleep 0.1; done

python3 - "$UR_PORT" "$SECONDS_RUN" "$IN_FLIGHT" <<'PY'
import socket, sys, threading, time, json
port, seconds, in_flight = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
addr = ("127.0.0.1", port)
end = time.time() + seconds
counts = {}
lock = threading.Lock()
def count(kind, status):
    with lock:
        counts.setdefault(kind, {}).setdefault(status, 0)
        counts[kind][status] += 1

def request(body, timeout=5.0, content_length=None):
    s = socket.create_connection(addr, timeout=timeout)
    try:
        n = len(body) if content_length is None else content_length
        s.sendall(b"POST /queries.json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % n + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data else 0
    except OSError:
        return -1
    finally:
        s.close()

def slow_loris():
    while time.time() < end:
        try:
            s = socket.create_connection(addr, timeout=5)
            s.sendall(b"POST /queries.json HTTP/1.1\r\nHost: x\r\n")
            while time.time() < end:
                time.sleep(0.5)
                s.sendall(b"X-a: b\r\n")
        except OSError:
            count("slow-loris", "closed by the server")
            time.sleep(0.1)

def oversized():
    body = json.dumps({"blacklistItems": ["item-%d" % i for i in range(100000)]}).encode()
    while time.time() < end:
        count("oversized", request(body))

def malformed():
    bodies = [b"{not json", b'{"usr": "u1"}', b'{"num": -1}', b'{"itemSet": ' + json.dumps(["i%d" % i for i in range(8200)]).encode() + b"}"]
    while time.time() < end:
        for b in bodies:
            count("malformed", request(b))

def flood():
    while time.time() < end:
        count("flood", request(b'{"user": "u1"}'))

latencies = []
def good():
    while time.time() < end:
        t = time.time()
        status = request(b'{"user": "u1", "num": 4}')
        if status == 200:
            latencies.append(time.time() - t)
        count("well-behaved", status)
        time.sleep(0.02)

threads = [threading.Thread(target=slow_loris) for _ in range(100)]
threads += [threading.Thread(target=oversized) for _ in range(2)]
threads += [threading.Thread(target=malformed) for _ in range(2)]
threads += [threading.Thread(target=flood) for _ in range(10 * in_flight)]
threads += [threading.Thread(target=good)]
for t in threads:
    t.daemon = True
    t.start()
for t in threads:
    t.join(timeout=max(0.0, end - time.time()) + 10)
latencies.sort()
pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
print(json.dumps(counts, indent=1, sort_keys=True))
good_errors = sum(n for s, n in counts.get("well-behaved", {}).items() if s != 200)
print("well-behaved client: %d answers, %d errors, p50 %.1f ms, p99 %.1f ms" % (len(latencies), good_errors, pct(0.50), pct(0.99)))
PY
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
echo "ur serve stopped after SIGTERM"
