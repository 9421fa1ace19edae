#!/usr/bin/env bash
# The fault matrix (issue 11): injects each fault for real against the release
# binaries and prints a markdown table — fault, expected, observed, result —
# then exits non-zero if any row failed. Recorded in docs/reliability.md.
#
#   scripts/faults.sh             every row (needs Java for Elasticsearch and
#                                 MiniDFS — see scripts/test.sh —, root for
#                                 the network-namespace and tmpfs rows)
#   scripts/faults.sh --quick     the rows without Elasticsearch, HDFS or
#                                 network namespaces, and 20 kill -9 runs
#   scripts/faults.sh ROW...      only these rows (function names below, e.g.
#                                 state_corrupt kill9_incremental)
#
# Environment: UR_FAULTS_KEEP=1 keeps the work directory; ES_ENGINE as in
# scripts/elasticsearch.sh; UR_FAULTS_NO_BUILD=1 skips `cargo build --release`;
# UR_FAULTS_PROFILE=debug runs the debug binaries instead (CI: `cargo test`
# has built them, a release build would add minutes; the rows hold the run
# at known points, so they do not depend on its speed).
#
# Each row is a function that sets $obs (what it saw) and returns 0 (pass),
# 1 (fail) or 3 (skipped: the reason in $obs). Everything it starts is on
# loopback, or on 10.250.0.1-3 inside network namespaces this script creates
# and deletes; every wait is bounded.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
profile="${UR_FAULTS_PROFILE:-release}"
case "$profile" in
  release) build_args=(--release) ;;
  debug) build_args=() ;;
  *) echo "faults.sh: UR_FAULTS_PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac
bin="$CARGO_TARGET_DIR/$profile"
now="2026-01-15T00:00:00Z"
# The cluster rows' shared secret (cluster/README.md: Secret).
UR_CLUSTER_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export UR_CLUSTER_SECRET

quick=0
only=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) only+=("$a") ;;
  esac
done

say() { echo "faults.sh: $*" >&2; }

if [[ "${UR_FAULTS_NO_BUILD:-0}" != 1 ]]; then
  say "cargo build ${build_args[*]} (ur-train, ur, examples)"
  cargo build "${build_args[@]}" --bins --examples -q >&2 || { say "build failed"; exit 2; }
fi
for b in ur-train ur examples/gen-events examples/query-load; do
  [[ -x "$bin/$b" ]] || { say "$bin/$b is missing: build with cargo build ${build_args[*]} --bins --examples"; exit 2; }
done

work="$(mktemp -d /tmp/ur-faults.XXXXXX)"
chmod 755 "$work"   # Elasticsearch runs as another user (scripts/elasticsearch.sh)
pids=()        # processes this script started (killed at exit)
mounts=()      # tmpfs mounts (unmounted at exit)
netns=()       # network namespaces (deleted at exit)
es_dir=""      # the Elasticsearch data directory, when started
cleanup() {
  local p m n
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [[ -n "$es_dir" ]] && es_stop
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
  for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
  if [[ "${UR_FAULTS_KEEP:-0}" == 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ helpers

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sha() { sha256sum "$1" 2>/dev/null | cut -c1-16; }
# tmp_left DIR: names of temporary models or states left in DIR
tmp_left() { find "$1" -maxdepth 1 -name '.*.tmp-*' -printf '%f ' 2>/dev/null; }
# wait_exit PID SECS: waits for PID (a child) to exit; sets $st to its
# status, or "timeout" (then it is still running)
wait_exit() {
  local pid=$1 secs=$2 t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null && [[ "$(cat /proc/$pid/stat 2>/dev/null | cut -d' ' -f3)" != Z ]]; do
    if (( SECONDS - t0 >= secs )); then st=timeout; return 1; fi
    sleep 0.1
  done
  wait "$pid"; st=$?
}
# wait_for FILE TEXT SECS: until FILE contains TEXT
wait_for() {
  local t0=$SECONDS
  until grep -q -- "$2" "$1" 2>/dev/null; do
    (( SECONDS - t0 >= $3 )) && return 1
    sleep 0.05
  done
}
# (a simple command, so that `"${T[@]}" ... &` gives ur-train's own pid in $!)
T=("$bin/ur-train" --no-progress --now "$now")
train() { "${T[@]}" "$@"; }

# The engine: two indicators and a popularity ranking over purchases.
engine="$work/engine.json"
cat >"$engine" <<'JSON'
{"algorithms": [{"name": "ur", "params": {
  "indexName": "urfaults",
  "indicators": [{"name": "purchase"}, {"name": "view", "maxCorrelatorsPerItem": 50}],
  "rankings": [{"name": "popRank", "type": "popular", "eventNames": ["purchase"]}],
  "seed": 7}}]}
JSON
# Generated events (ids user-N, item-N): small files for incremental runs,
# and a larger set for runs that must last long enough to be hit mid-way.
"$bin/examples/gen-events" --events 120000 --files 24 --out "$work/gen" >/dev/null
"$bin/examples/gen-events" --events 3000000 --files 6 --seed 5 --out "$work/big" >/dev/null
gen_files=()
while IFS= read -r f; do gen_files+=("${f#"$work/gen/"}"); done < <(find "$work/gen" -type f | sort)

# stage DIR K: DIR holds the first K generated files (same relative paths)
stage() {
  local d=$1 k=$2 i
  mkdir -p "$d"
  for ((i = 0; i < k; i++)); do
    [[ -e "$d/${gen_files[$i]}" ]] && continue
    mkdir -p "$d/$(dirname "${gen_files[$i]}")"
    cp -p "$work/gen/${gen_files[$i]}" "$d/${gen_files[$i]}"
  done
}
# full_model K: sets $fh to the items.jsonl hash of a full training on the
# first K files (cached; a fresh training leaves its model in $work/full-out)
declare -A full_hash=()
full_model() {
  local k=$1
  if [[ -z "${full_hash[$k]:-}" ]]; then
    rm -rf "$work/full-in" "$work/full-out"
    stage "$work/full-in" "$k"
    train -q -e "$engine" -i "$work/full-in" -o "$work/full-out" >/dev/null 2>&1 || { fh="full-training-failed"; return; }
    full_hash[$k]="$(sha "$work/full-out/items.jsonl")"
  fi
  fh="${full_hash[$k]}"
}

# ------------------------------------------------------------------ peers

# cluster_start N TAG [ur-train args...]: N processes on 127.0.0.1..N, logs
# in $work/TAG-P.log, pids in cluster_pids. With $hold set to a file name,
# the last process holds mid-co-occurrence until that file exists
# (UR_TRAIN_TEST_HOLD, src/hold.rs) and logs "holding".
cluster_pids=()
hold=""
cluster_start() {
  local n=$1 tag=$2 port p pre; shift 2
  port="$(free_port)"
  : >"$work/$tag-hosts"
  for ((p = 1; p <= n; p++)); do echo "127.0.0.$p:$port" >>"$work/$tag-hosts"; done
  cluster_pids=()
  for ((p = 0; p < n; p++)); do
    pre=()
    [[ -n "$hold" && $p == $((n - 1)) ]] && pre=(env "UR_TRAIN_TEST_HOLD=$hold")
    "${pre[@]}" "${T[@]}" --hosts "$work/$tag-hosts" --process "$p" --workers 1 "$@" 2>"$work/$tag-$p.log" >/dev/null &
    cluster_pids+=($!); pids+=($!)
  done
}
has_peer_timeout() { "$bin/ur-train" --help 2>/dev/null | grep -q -- '--peer-timeout'; }

# A peer hit by SIGNAL once the run trains: the others end, naming it.
peer_fault() {
  local sig=$1 out="$work/peer-$1" p s t0 elapsed names="" extra=()
  has_peer_timeout && extra=(--peer-timeout 5)
  rm -rf "$out"
  # Process 2 holds mid-co-occurrence (the file is never created): the
  # fault hits it there, whatever the speed of the run.
  hold="$work/peer$sig-never"
  cluster_start 3 "peer$sig" -e "$engine" -i "$work/big" -o "$out" "${extra[@]}"
  hold=""
  if ! wait_for "$work/peer$sig-2.log" holding 60; then obs="process 2 never reached co-occurrence: $(tail -1 "$work/peer$sig-2.log")"; kill -9 "${cluster_pids[@]}" 2>/dev/null; return 1; fi
  kill "-$sig" "${cluster_pids[2]}"; t0=$SECONDS
  for p in 0 1; do
    wait_exit "${cluster_pids[$p]}" 60; s=$st
    names+="p$p exit $s; "
    if [[ $s == timeout || $s == 0 ]]; then
      kill -9 "${cluster_pids[@]}" 2>/dev/null
      obs="${names}after $((SECONDS - t0)) s$([[ $sig == STOP ]] && ! has_peer_timeout && echo ': needs --peer-timeout')"
      return 1
    fi
    grep -qE "process 2 \(127\.0\.0\.3:[0-9]+\) has been silent|lost the connection to process 2|process 2" "$work/peer$sig-$p.log" \
      || { obs="p$p does not name process 2: $(grep -i error "$work/peer$sig-$p.log" | tail -1)"; kill -9 "${cluster_pids[2]}"; return 1; }
  done
  elapsed=$((SECONDS - t0))
  kill -9 "${cluster_pids[2]}" 2>/dev/null; wait "${cluster_pids[2]}" 2>/dev/null
  local left; left="$(tmp_left "$work")"
  if [[ -e "$out" || -n "$left" ]]; then obs="${names}model or temporary left: $left"; return 1; fi
  cluster_start 3 "peer$sig-rerun" -e "$engine" -i "$work/big" -o "$out" "${extra[@]}"
  for p in 0 1 2; do
    wait_exit "${cluster_pids[$p]}" 300; s=$st
    [[ $s == 0 ]] || { obs="${names}rerun: p$p exit $s"; return 1; }
  done
  obs="${names}in ${elapsed} s naming process 2: \"$(grep -ohE 'process 2 \([^)]*\)[^,;]*' "$work/peer$sig-0.log" | head -1)\"; nothing left; rerun ok"
}
peer_kill() { peer_fault KILL; }
peer_stop() {
  has_peer_timeout || { obs="needs --peer-timeout (not in this ur-train): a stopped peer hangs the others"; return 1; }
  peer_fault STOP
}

# A real 3-host rehearsal: namespaces urf-h1..3 on a bridge in urf-hub,
# 10.250.0.1-3/24; host 3's link is set down mid-run.
netns_setup() {
  local i
  ip netns add urf-hub && netns+=(urf-hub) || return 1
  ip -n urf-hub link add br0 type bridge && ip -n urf-hub link set br0 up || return 1
  for i in 1 2 3; do
    ip netns add "urf-h$i" && netns+=("urf-h$i") || return 1
    ip link add "urf-v$i" netns "urf-h$i" type veth peer name "hub$i" netns urf-hub || return 1
    ip -n urf-hub link set "hub$i" master br0 up || return 1
    ip -n "urf-h$i" addr add "10.250.0.$i/24" dev "urf-v$i" || return 1
    ip -n "urf-h$i" link set "urf-v$i" up && ip -n "urf-h$i" link set lo up || return 1
  done
}
netns_cut() {
  [[ $EUID -eq 0 ]] && command -v ip >/dev/null || { obs="needs root and ip netns"; return 3; }
  has_peer_timeout || { obs="needs --peer-timeout (not in this ur-train): a cut peer hangs the others"; return 1; }
  netns_setup 2>"$work/netns.err" || { obs="needs root and ip netns: $(head -1 "$work/netns.err")"; return 3; }
  local port=47011 out="$work/net-model" p s t0 names="" run pre
  printf '10.250.0.%s:%s\n' 1 $port 2 $port 3 $port >"$work/net-hosts"
  for run in cut rerun; do
    rm -f "$work"/net-"$run"-*.log
    cluster_pids=()
    for p in 0 1 2; do
      # In the cut run, host 3 holds mid-co-occurrence (src/hold.rs)
      # until its link is down.
      pre=(env)
      [[ $run == cut && $p == 2 ]] && pre=(env "UR_TRAIN_TEST_HOLD=$work/net-never")
      ip netns exec "urf-h$((p + 1))" "${pre[@]}" "$bin/ur-train" --no-progress --now "$now" -e "$engine" -i "$work/big" -o "$out" \
        --hosts "$work/net-hosts" --process "$p" --workers 1 --peer-timeout 5 --connect-timeout 20 \
        2>"$work/net-$run-$p.log" >/dev/null &
      cluster_pids+=($!); pids+=($!)
    done
    if [[ $run == rerun ]]; then
      for p in 0 1 2; do wait_exit "${cluster_pids[$p]}" 300; s=$st; [[ $s == 0 ]] || { obs="${names}rerun: p$p exit $s"; return 1; }; done
      break
    fi
    wait_for "$work/net-cut-2.log" holding 60 || { obs="host 3 never reached co-occurrence: $(tail -1 "$work/net-cut-2.log")"; return 1; }
    ip -n urf-hub link set hub3 down; t0=$SECONDS
    for p in 0 1 2; do
      wait_exit "${cluster_pids[$p]}" 60; s=$st; names+="p$p exit $s; "
      [[ $s != timeout && $s != 0 ]] || { kill -9 "${cluster_pids[@]}" 2>/dev/null; obs="$names"; return 1; }
    done
    grep -q "10.250.0.3" "$work/net-cut-0.log" || { obs="${names}p0 does not name 10.250.0.3: $(grep -i error "$work/net-cut-0.log" | tail -1)"; return 1; }
    names+="in $((SECONDS - t0)) s; "
    [[ ! -e "$out" && -z "$(tmp_left "$work")" ]] || { obs="${names}model or temporary left: $(tmp_left "$work")"; return 1; }
    ip -n urf-hub link set hub3 up
  done
  obs="${names}p0: \"$(grep -ohE 'process 2 \([^)]*\)[^,;]*' "$work/net-cut-0.log" | head -1)\"; nothing left; rerun ok"
}

# ------------------------------------------------------------------ Elasticsearch

es_url=""
es_start() {
  [[ -n "$es_url" ]] && return 0
  es_dir="$work/es"
  local port; port="$(free_port)"
  es_url="$(scripts/elasticsearch.sh start --port "$port" --data "$es_dir" --quiet 2>"$work/es-start.err")" \
    || { es_url=""; es_dir=""; return 1; }
}
es_stop() { scripts/elasticsearch.sh stop --data "$es_dir" >/dev/null 2>&1; es_url=""; }
es_java_pid() {  # the JVM under scripts/elasticsearch.sh's pid
  local p; p="$(cat "$es_dir/run.pid" 2>/dev/null)"
  while [[ -n "$p" ]]; do
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == java ]] && { echo "$p"; return; }
    p="$(pgrep -P "$p" | head -1)"
  done
}
need_es() { es_start || { obs="needs Elasticsearch (scripts/elasticsearch.sh: Java): $(tail -1 "$work/es-start.err")"; return 3; }; }
alias_of() { curl -s "$es_url/_alias/urfaults" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin))))' 2>/dev/null; }
ur_query() { "$bin/ur" -e "$engine" --es-url "$es_url" query "$1" 2>&1; }
# A published model to fault against, and what it answers.
es_baseline() {
  train -q -e "$engine" -i "$work/gen" --es-url "$es_url" >/dev/null 2>"$work/es-base.err" || return 1
  base_alias="$(alias_of)"
  curl -s "$es_url/_cat/indices/urfaults*?h=index" >"$work/es-before"; base_answer="$(ur_query '{"user": "user-1"}')"
  [[ "$base_answer" == *itemScores*item-* ]]
}
# es_new_index: waits until an index that was not there at the baseline exists; prints it
es_new_index() {
  local t0=$SECONDS n
  while (( SECONDS - t0 < 60 )); do
    n="$(curl -s "$es_url/_cat/indices/urfaults_*?h=index" | grep -vxF -f "$work/es-before" | grep -v users | head -1)"
    [[ -n "$n" ]] && { echo "$n"; return 0; }
    sleep 0.05
  done
  return 1
}
# es_held_run LOG: starts a run into Elasticsearch that holds after its
# first acknowledged bulk request (UR_TRAIN_TEST_HOLD_AT=bulk, src/hold.rs);
# sets $run; `touch "$work/bulk-go"` lets it go on
es_held_run() {
  rm -f "$work/bulk-go"
  env "UR_TRAIN_TEST_HOLD=$work/bulk-go" UR_TRAIN_TEST_HOLD_AT=bulk \
    "${T[@]}" -e "$engine" -i "$work/big" --es-url "$es_url" --es-batch-bytes 65536 --es-retries 3 >/dev/null 2>"$1" &
  run=$!; pids+=($run)
}
es_old_serves() { [[ "$(alias_of)" == "$base_alias" && "$(ur_query '{"user": "user-1"}')" == "$base_answer" ]]; }

es_killed() {
  need_es || return 3
  es_baseline || { obs="baseline run failed: $(tail -1 "$work/es-base.err")"; return 1; }
  local run s
  es_held_run "$work/es-kill.log"
  wait_for "$work/es-kill.log" "holding mid-bulk" 120 || { obs="the run did not reach its bulk: $(tail -1 "$work/es-kill.log")"; return 1; }
  kill -9 "$(es_java_pid)"; local t0=$SECONDS
  touch "$work/bulk-go"
  wait_exit $run 120; s=$st
  local took=$((SECONDS - t0))
  es_stop; es_dir=""
  [[ $s != 0 && $s != timeout ]] || { obs="run exit $s after ES was killed"; return 1; }
  local err; err="$(grep -iE 'error' "$work/es-kill.log" | tail -1 | cut -c1-120)"
  # the same data directory: the old model must still be there and serving
  es_dir="$work/es"; local port; port="$(free_port)"
  es_url="$(scripts/elasticsearch.sh start --port "$port" --data "$es_dir" --quiet 2>>"$work/es-start.err")" || { obs="ES did not restart"; return 1; }
  es_old_serves || { obs="exit $s in $took s; after restart the old model does not serve (alias $(alias_of))"; return 1; }
  train -q -e "$engine" -i "$work/gen" --es-url "$es_url" >/dev/null 2>"$work/es-kill-rerun.err" || { obs="rerun failed: $(tail -1 "$work/es-kill-rerun.err")"; return 1; }
  obs="exit $s in $took s (\"${err}\"); old model served after restart; rerun ok"
}

es_throttled() {
  need_es || return 3
  local port proxy s
  port="$(free_port)"
  python3 scripts/fault-proxy.py --listen "127.0.0.1:$port" --upstream "${es_url#http://}" --every 3 --statuses 429,503 \
    >"$work/proxy.out" 2>"$work/proxy.err" &
  proxy=$!; pids+=($proxy)
  wait_for "$work/proxy.out" Ready 10 || { obs="proxy did not start: $(tail -1 "$work/proxy.err")"; return 1; }
  train -q -e "$engine" -i "$work/gen" -o "$work/proxied" --es-url "http://127.0.0.1:$port" --es-batch-bytes 65536 \
    >/dev/null 2>"$work/proxied.err"
  s=$?
  kill -TERM $proxy; wait $proxy 2>/dev/null
  local injected; injected="$(grep injected "$work/proxy.out")"
  [[ $s == 0 ]] || { obs="exit $s ($injected): $(tail -1 "$work/proxied.err")"; return 1; }
  [[ "$injected" =~ injected\ ([1-9][0-9]*) ]] || { obs="nothing injected: $injected"; return 1; }
  local docs; docs="$(curl -s "$es_url/urfaults/_count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')"
  local want; want="$(wc -l <"$work/proxied/items.jsonl")"
  [[ "$docs" == "$want" ]] || { obs="$injected; index holds $docs documents, the model $want"; return 1; }
  full_model 24
  [[ "$(sha "$work/proxied/items.jsonl")" == "$fh" ]] || { obs="$injected; model differs from a direct run"; return 1; }
  obs="exit 0, $injected, all $docs documents indexed, model identical to a direct run"
}

es_readonly() {
  need_es || return 3
  es_baseline || { obs="baseline run failed: $(tail -1 "$work/es-base.err")"; return 1; }
  local run s idx
  es_held_run "$work/es-ro.log"
  wait_for "$work/es-ro.log" "holding mid-bulk" 120 || { obs="the run did not reach its bulk: $(tail -1 "$work/es-ro.log")"; return 1; }
  idx="$(es_new_index)" || { obs="no new index appeared"; return 1; }
  curl -s -XPUT "$es_url/$idx/_settings" -H 'Content-Type: application/json' -d '{"index.blocks.write": true}' >/dev/null
  touch "$work/bulk-go"
  wait_exit $run 120; s=$st
  [[ $s != 0 && $s != timeout ]] || { obs="run exit $s with $idx read-only"; return 1; }
  local err; err="$(grep -iE 'error' "$work/es-ro.log" | tail -1 | cut -c1-120)"
  es_old_serves || { obs="exit $s; the old model no longer serves (alias $(alias_of))"; return 1; }
  curl -s -XPUT "$es_url/$idx/_settings" -H 'Content-Type: application/json' -d '{"index.blocks.write": null}' >/dev/null
  train -q -e "$engine" -i "$work/gen" --es-url "$es_url" >/dev/null 2>"$work/es-ro-rerun.err" || { obs="rerun failed: $(tail -1 "$work/es-ro-rerun.err")"; return 1; }
  obs="exit $s (\"${err}\"); old model kept serving; rerun ok"
}

# ------------------------------------------------------------------ HDFS

hdfs_unreachable() {
  local port s t0=$SECONDS
  port="$(free_port)"   # nothing listens there
  "${T[@]}" -q -e "$engine" -i "hdfs://127.0.0.1:$port/events" -o "$work/hdfs-none" >/dev/null 2>"$work/hdfs-none.err" &
  local run=$!; pids+=($run)
  wait_exit $run 120; s=$st
  local took=$((SECONDS - t0)) err; err="$(head -1 "$work/hdfs-none.err" | cut -c1-140)"
  [[ $s != 0 && $s != timeout && ! -e "$work/hdfs-none" ]] || { obs="exit $s after $took s: $err"; return 1; }
  grep -q "127.0.0.1:$port" "$work/hdfs-none.err" || { obs="exit $s, does not name the NameNode: $err"; return 1; }
  obs="exit $s in $took s: \"$err\""
}

hdfs_restart() {
  [[ -n "${JAVA:-}" ]] || JAVA="$(command -v java || true)"
  [[ -n "$JAVA" ]] || { obs="needs Java for MiniDFS"; return 3; }
  export JAVA
  scripts/minidfs.sh prepare >/dev/null 2>"$work/minidfs-prepare.err" || { obs="needs MiniDFS: $(tail -1 "$work/minidfs-prepare.err")"; return 3; }
  local port fifo="$work/minidfs.in" s
  port="$(free_port)"
  mkfifo "$fifo"
  scripts/minidfs.sh run --port "$port" <"$fifo" >"$work/minidfs.out" 2>"$work/minidfs.err" &
  local dfs=$!; pids+=($dfs)
  exec 7>"$fifo"
  wait_for "$work/minidfs.out" Ready 120 || { exec 7>&-; obs="MiniDFS did not start"; return 1; }
  local url="hdfs://127.0.0.1:$port"
  echo "put $work/big /events" >&7
  wait_for "$work/minidfs.out" "Put /events" 120 || { exec 7>&-; obs="could not upload the events"; return 1; }
  env "UR_TRAIN_TEST_HOLD=$work/read-go" UR_TRAIN_TEST_HOLD_AT=reading \
    "${T[@]}" -e "$engine" -i "$url/events" -o "$work/hdfs-model" >/dev/null 2>"$work/hdfs-restart.log" &
  local run=$!; pids+=($run)
  wait_for "$work/hdfs-restart.log" "holding mid-reading" 60 || { exec 7>&-; obs="the run did not start reading"; return 1; }
  echo "restart-namenode" >&7; local t0=$SECONDS
  touch "$work/read-go"
  wait_exit $run 180; s=$st
  local took=$((SECONDS - t0))
  wait_for "$work/minidfs.out" "Restarted" 120 || { exec 7>&-; obs="the NameNode did not come back"; return 1; }
  exec 7>&-
  wait_exit $dfs 60
  local err; err="$(grep -i error "$work/hdfs-restart.log" | tail -1 | cut -c1-100)"
  [[ $s == 0 ]] || { obs="exit $s $took s after the restart: \"$err\""; return 1; }
  full="$(full_hash_of_dir "$work/big")"
  [[ "$(sha "$work/hdfs-model/items.jsonl")" == "$full" ]] || { obs="exit 0 but the model differs from a local training"; return 1; }
  local retries; retries="$(grep -c retrying "$work/hdfs-restart.log")"
  obs="exit 0 ($took s after the restart, $retries reads retried), model identical to a local training"
}
full_hash_of_dir() {
  train -q -e "$engine" -i "$1" -o "$work/local-ref" >/dev/null 2>&1 && sha "$work/local-ref/items.jsonl"
}

# ------------------------------------------------------------------ storage

disk_full() {
  [[ $EUID -eq 0 ]] || { obs="needs root (mount -t tmpfs)"; return 3; }
  local mnt="$work/small" s
  mkdir -p "$mnt"
  mount -t tmpfs -o size=3m urfaults "$mnt" || { obs="mount -t tmpfs failed"; return 3; }
  mounts+=("$mnt")
  stage "$work/disk-in" 2
  train -q -e "$engine" -i "$work/disk-in" -o "$mnt/model" --state "$mnt/state" >/dev/null 2>"$work/disk.err" \
    || { obs="the small first model did not fit: $(tail -1 "$work/disk.err")"; return 1; }
  local before; before="$(sha "$mnt/model/items.jsonl")"
  train -q -e "$engine" -i "$work/big" -o "$mnt/model" >/dev/null 2>"$work/disk-full.err"; s=$?
  local err; err="$(grep -i error "$work/disk-full.err" | tail -1 | cut -c1-120)"
  [[ $s == 1 ]] || { obs="exit $s: $err"; return 1; }
  [[ "$(sha "$mnt/model/items.jsonl")" == "$before" ]] || { obs="exit 1 but the previous model changed"; return 1; }
  [[ -z "$(tmp_left "$mnt")" ]] || { obs="exit 1, temporaries left: $(tmp_left "$mnt")"; return 1; }
  [[ "$(df --output=used -B1 "$mnt" | tail -1)" -lt 2500000 ]] || { obs="exit 1 but the disk is still full"; return 1; }
  train -q -e "$engine" -i "$work/disk-in" -o "$mnt/model" --state "$mnt/state" >/dev/null 2>"$work/disk-rerun.err" \
    || { obs="rerun failed: $(tail -1 "$work/disk-rerun.err")"; return 1; }
  obs="exit 1 (\"$err\"); previous model intact, no temporary left; rerun ok"
}

# state_fault NAME HOW: damage part-00000.bin of a state (HOW: flip|truncate)
state_fault() {
  local d="$work/state-$1" s
  rm -rf "$d"; stage "$d/in" 4
  train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" >/dev/null 2>&1 || { obs="first run failed"; return 1; }
  local before; before="$(sha "$d/model/items.jsonl")"
  stage "$d/in" 6
  local part="$d/state/part-00000.bin" size
  size="$(stat -c %s "$part")"
  if [[ $2 == flip ]]; then
    python3 - "$part" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x10; open(p, "wb").write(b)
PY
  else
    truncate -s $((size / 2)) "$part"
  fi
  train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" >/dev/null 2>"$d/err"; s=$?
  local err; err="$(grep -i corrupt "$d/err" | head -1 | cut -c1-140)"
  [[ $s == 1 && -n "$err" ]] || { obs="exit $s: $(tail -1 "$d/err" | cut -c1-140)"; return 1; }
  [[ "$(sha "$d/model/items.jsonl")" == "$before" ]] || { obs="exit $s but the model changed"; return 1; }
  train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" --full >/dev/null 2>"$d/err2" || { obs="--full failed: $(tail -1 "$d/err2")"; return 1; }
  full_model 6
  [[ "$(sha "$d/model/items.jsonl")" == "$fh" ]] || { obs="--full gave a different model"; return 1; }
  obs="exit 1 \"$err\"; model kept; --full then gives the full model"
}
state_corrupt() { state_fault corrupt flip; }
state_truncated() { state_fault truncated truncate; }

# kill -9 at random points across incremental runs: after every run the
# model is a full training on some prefix of the input, the state never
# ahead of it, and the last model is the full training on all files.
kill9_incremental() {
  local d="$work/kill9" runs=24 i s killed=0 h k ok span=150 started took
  rm -rf "$d"; mkdir -p "$d"
  RANDOM=11
  for ((i = 1; i <= runs; i++)); do
    stage "$d/in" "$i"
    started=$(date +%s%N)
    "${T[@]}" -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" >/dev/null 2>"$d/run$i.err" &
    local run=$!
    # a random point within the run: the kill window follows the length of
    # the last run that finished before its kill (machines differ in speed)
    sleep "$(awk -v ms=$((RANDOM % span)) 'BEGIN { printf "%.3f", ms / 1000 }')"
    kill -9 $run 2>/dev/null
    wait $run 2>/dev/null; s=$?
    [[ $s == 137 ]] && killed=$((killed + 1))
    if [[ $s == 0 ]]; then
      took=$(( ($(date +%s%N) - started) / 1000000 ))
      span=$(( took * 9 / 10 > 5 ? took * 9 / 10 : 5 ))
    fi
    [[ $s == 0 || $s == 137 ]] || { obs="run $i exit $s: $(tail -1 "$d/run$i.err")"; return 1; }
    if [[ -e "$d/model/items.jsonl" ]]; then
      h="$(sha "$d/model/items.jsonl")" ok=0
      for ((k = i; k >= 1; k--)); do full_model "$k"; [[ "$h" == "$fh" ]] && { ok=1; break; }; done
      [[ $ok == 1 ]] || { obs="after run $i the model is no full training of any prefix"; return 1; }
      if [[ -e "$d/state/state.json" ]]; then
        local c; c="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["consumed"]))' "$d/state/state.json")"
        (( c <= k )) || { obs="after run $i the state consumed $c files, the model $k"; return 1; }
      fi
    fi
  done
  train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" >/dev/null 2>"$d/last.err" || { obs="last run failed: $(tail -1 "$d/last.err")"; return 1; }
  full_model $runs
  [[ "$(sha "$d/model/items.jsonl")" == "$fh" ]] || { obs="the last model differs from a full training"; return 1; }
  [[ -z "$(tmp_left "$d")" ]] || { obs="temporaries left: $(tmp_left "$d")"; return 1; }
  (( killed >= 8 )) || { obs="only $killed of $runs runs were killed mid-way: the row proves little"; return 1; }
  obs="$runs runs, $killed killed at random, $((runs - killed)) finished: every model a full training of a prefix, state never ahead; last model = full training"
}

# Soak: 20 incremental runs into Elasticsearch while `ur serve` answers a
# bounded loopback load; then the indexed popRank equals a full training's.
soak() {
  need_es || return 3
  local d="$work/soak" port s i
  rm -rf "$d"; mkdir -p "$d"
  port="$(free_port)"
  "$bin/ur" -e "$engine" --es-url "$es_url" serve --listen "127.0.0.1:$port" >/dev/null 2>"$d/serve.err" &
  local serve=$!; pids+=($serve)
  stage "$d/in" 4
  train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" --es-url "$es_url" >/dev/null 2>"$d/first.err" \
    || { obs="first run failed: $(tail -1 "$d/first.err")"; return 1; }
  local t0=$SECONDS
  until curl -sf "127.0.0.1:$port/health" >/dev/null; do (( SECONDS - t0 > 20 )) && { obs="ur serve did not start"; return 1; }; sleep 0.1; done
  # the load: bursts of at most 5 s, 4 clients, until the runs are done
  ( while [[ ! -e "$d/stop" ]]; do
      "$bin/examples/query-load" --addr "127.0.0.1:$port" --clients 4 --requests 100000 --seconds 5 --users 3000 --items 600
    done ) >"$d/load.out" 2>&1 &
  local load=$!; pids+=($load)
  for ((i = 5; i <= 24; i++)); do
    stage "$d/in" "$i"
    train -q -e "$engine" -i "$d/in" -o "$d/model" --state "$d/state" --es-url "$es_url" >/dev/null 2>"$d/run$i.err" \
      || { touch "$d/stop"; obs="run $i failed: $(tail -1 "$d/run$i.err")"; return 1; }
  done
  touch "$d/stop"; wait_exit $load 30
  local ok errors load_line
  ok="$(grep -oE '[0-9]+ ok' "$d/load.out" | awk '{s += $1} END {print s + 0}')"
  errors="$(grep -oE '[0-9]+ errors' "$d/load.out" | awk '{s += $1} END {print s + 0}')"
  load_line="$ok queries answered, $errors failed"
  kill $serve; wait $serve 2>/dev/null
  unset 'full_hash[24]'; full_model 24 >/dev/null   # leaves the full training in $work/full-out
  python3 - "$es_url" "$work/full-out/items.jsonl" "$d/model/items.jsonl" >"$d/cmp" 2>&1 <<'PY'
import json, sys, urllib.request
url, full_path, inc_path = sys.argv[1:4]
def pop(lines):
    return {d["id"]: d.get("popRank") for d in lines}
full = pop(json.loads(l) for l in open(full_path))
inc = pop(json.loads(l) for l in open(inc_path))
req = urllib.request.Request(url + "/urfaults/_search?size=10000", data=b'{"query":{"match_all":{}},"_source":["popRank"]}',
                             headers={"Content-Type": "application/json"})
hits = json.load(urllib.request.urlopen(req))["hits"]["hits"]
es = {h["_id"]: h["_source"].get("popRank") for h in hits}
bad = [k for k in full if es.get(k) != full[k]] + [k for k in es if k not in full]
print(f"{len(full)} items; popRank total full {sum(v or 0 for v in full.values())} indexed {sum(v or 0 for v in es.values())}; "
      f"{len(bad)} differ; local incremental model {'=' if inc == full else '!='} full")
sys.exit(1 if bad or inc != full else 0)
PY
  s=$?
  [[ $ok -gt 0 && $errors == 0 ]] || { obs="load: $load_line"; return 1; }
  [[ $s == 0 ]] || { obs="load: $load_line; $(cat "$d/cmp")"; return 1; }
  obs="20 incremental runs; load: $load_line; $(cat "$d/cmp")"
}

# ------------------------------------------------------------------ the table

rows_all=(peer_kill peer_stop netns_cut es_killed es_throttled es_readonly hdfs_restart hdfs_unreachable
  disk_full state_corrupt state_truncated kill9_incremental soak)
rows_quick=(peer_kill peer_stop hdfs_unreachable disk_full state_corrupt state_truncated kill9_incremental)
declare -A fault=(
  [peer_kill]="a peer process killed (SIGKILL) mid-co-occurrence (3 processes, loopback)"
  [peer_stop]="a peer process stopped (SIGSTOP) mid-co-occurrence (3 processes, loopback)"
  [netns_cut]="a peer's network cut (\`ip link set … down\`) in a 3-host rehearsal (network namespaces, 10.250.0.1-3)"
  [es_killed]="Elasticsearch killed (SIGKILL) mid-bulk"
  [es_throttled]="Elasticsearch answering 429/503 to every 3rd bulk request (scripts/fault-proxy.py)"
  [es_readonly]="the new index turned read-only (\`index.blocks.write\`) mid-run"
  [hdfs_restart]="the NameNode restarted mid-read (MiniDFS)"
  [hdfs_unreachable]="HDFS unreachable at start (nothing listening)"
  [disk_full]="output disk full (3 MB tmpfs) while replacing a model"
  [state_corrupt]="a corrupt state part (one bit flipped)"
  [state_truncated]="a truncated state part (half of it)"
  [kill9_incremental]="\`kill -9\` of ur-train at random points across 24 incremental runs"
  [soak]="soak: 20 incremental runs into Elasticsearch while \`ur serve\` answers a bounded load"
)
declare -A expected=(
  [peer_kill]="the others exit non-zero promptly naming process 2; no model or temporary left; rerun succeeds"
  [peer_stop]="the others exit non-zero within --peer-timeout (5 s) naming process 2; nothing left; rerun succeeds"
  [netns_cut]="every process exits non-zero within --peer-timeout naming 10.250.0.3; nothing left; rerun succeeds"
  [es_killed]="exit non-zero after the retries; alias unchanged, old model served once ES is back; rerun succeeds"
  [es_throttled]="retried with backoff: exit 0, every document indexed, model identical"
  [es_readonly]="exit non-zero; alias unchanged, old model keeps serving; rerun succeeds"
  [hdfs_restart]="the reads retry through the restart: exit 0, the model a local training gives"
  [hdfs_unreachable]="exit non-zero promptly naming the NameNode; no model"
  [disk_full]="exit 1; previous model intact; no temporary left, space freed; rerun succeeds"
  [state_corrupt]="exit 1 \"corrupt state …; retrain with --full\"; model kept; --full succeeds"
  [state_truncated]="exit 1 \"corrupt state …; retrain with --full\"; model kept; --full succeeds"
  [kill9_incremental]="model and state always consistent; the final model equals a full training"
  [soak]="zero failed queries; indexed popRank equal to a full training's (no lost or double-counted event)"
)

rows=("${rows_all[@]}")
[[ $quick == 1 ]] && rows=("${rows_quick[@]}")
[[ ${#only[@]} -gt 0 ]] && rows=("${only[@]}")

table=()
failed=0 skipped=0
t_all=$SECONDS
for r in "${rows[@]}"; do
  [[ -n "${fault[$r]:-}" ]] || { say "unknown row $r (rows: ${rows_all[*]})"; exit 2; }
  say "row $r ..."
  obs="" t0=$SECONDS
  "$r"; rc=$?
  case $rc in
    0) result=pass ;;
    3) result=skipped; skipped=$((skipped + 1)) ;;
    *) result=FAIL; failed=$((failed + 1)) ;;
  esac
  obs="${obs//|/\\|}"
  say "row $r: $result ($((SECONDS - t0)) s): $obs"
  table+=("| ${fault[$r]} | ${expected[$r]} | ${obs} | $result ($((SECONDS - t0)) s) |")
done

echo "| fault | expected | observed | result |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${table[@]}"
echo
echo "in $((SECONDS - t_all)) s:"
echo "faults: $(( ${#rows[@]} - failed - skipped )) passed, $failed failed, $skipped skipped"
[[ $failed == 0 ]]
