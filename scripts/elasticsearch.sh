#!/usr/bin/env bash
# A real, throwaway Elasticsearch or OpenSearch for local use and integration
# tests: the `integ-test-zip` distribution from Maven Central (a minimal node:
# server + transport-netty4; Elasticsearch 7.17-9 add x-pack-core and
# x-pack-security; OpenSearch has no security plugin; no bundled JDK).
# ES_ENGINE picks the engine (default elasticsearch-8.19.21): e.g.
# elasticsearch-7.17.29, elasticsearch-9.2.8, opensearch-2.19.6, opensearch-3.6.0.
#
#   scripts/elasticsearch.sh install
#       download (checksum-verified) and unpack once into the cache; prints the
#       ES home directory. Idempotent, safe to run concurrently.
#   scripts/elasticsearch.sh java
#       install, then print the JDK home `run` would use, or fail saying which
#       Java the engine needs.
#   scripts/elasticsearch.sh run --port N --data DIR [options]
#       run ES in the FOREGROUND on http://127.0.0.1:N with everything it writes
#       (config copy, data, logs, tmp) under DIR. Prints exactly one line on stdout,
#       `Ready http://127.0.0.1:N`, once GET /_cluster/health?wait_for_status=yellow
#       succeeds; all ES output goes to stderr (and to DIR/logs/). Stops ES cleanly
#       and exits 0 on SIGTERM/SIGINT, or when stdin reaches EOF if stdin is a pipe
#       (unless --no-stdin). If ES dies on its own, exits non-zero.
#   scripts/elasticsearch.sh start --port N --data DIR [options]
#       the same in the background (pid in DIR/run.pid, output in DIR/run.out and
#       DIR/run.err); waits for readiness and prints the URL.
#   scripts/elasticsearch.sh stop --data DIR
#       stop what `start` started (SIGTERM, waits for a clean exit).
#
# Options of run/start:
#   --heap SIZE            JVM heap (-Xms = -Xmx), default 512m
#   --transport-port N     transport (node-to-node) port, default 0 = any free port
#   --security             enable x-pack security with HTTP basic auth (plain HTTP,
#                          no TLS); a superuser is created in the file realm at
#                          startup: --user NAME (default urtrain) --password PASS
#                          (default urtrain-test; min 6 chars). Clients send
#                          `Authorization: Basic base64(NAME:PASS)`; anything else
#                          gets 401. API keys, tokens, native users/roles and the
#                          `elastic` user do NOT work in this distribution (they need
#                          the .security index, which needs the absent
#                          analysis-common module), so they are switched off.
#   --no-stdin             do not stop on stdin EOF
#   --quiet                ES console output to DIR/logs/console.log instead of stderr
#   --timeout SECS         give up if not ready within SECS (default 180)
#
# Environment:
#   ES_CACHE       cache directory (default ${XDG_CACHE_HOME:-~/.cache}/ur-train)
#   ES_ENGINE      FLAVOUR-VERSION, default elasticsearch-$ES_VERSION
#   ES_VERSION     Elasticsearch version when ES_ENGINE is unset, default 8.19.21
#   ES_JAVA_HOME   JDK to use; default: the first of `java` on PATH, JAVA_HOME,
#                  /usr/lib/jvm/* that the distribution's java-version-checker
#                  accepts (ES 7.17: 17-21; ES 8, OpenSearch 2: 17+; ES 9,
#                  OpenSearch 3: 21+)
#   ES_RUN_USER    when run as root (ES refuses root): system user to run ES as,
#                  created if missing (default urtrain-es)
#   ES_JAVA_OPTS   extra JVM options for the ES server (passed through), e.g.
#                  -XX:TieredStopAtLevel=1 for a slightly faster start
#
# Needs bash, curl, unzip, sha512sum (or sha1sum), setpriv (util-linux), a JDK.
# ES 8+'s distribution has no `GET /` (the rest-root module is not in it): probe
# readiness with /_cluster/health. Also absent: painless scripts, _reindex,
# analysis-common (e.g. the whitespace tokenizer), mapper-extras (rank_feature...).
# If the caller pipes stderr, it must drain it (or use --quiet).
set -euo pipefail

die() { echo "elasticsearch.sh: $*" >&2; exit 1; }
say() { echo "elasticsearch.sh: $*" >&2; }

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
engine="${ES_ENGINE:-elasticsearch-${ES_VERSION:-8.19.21}}"
flavour="${engine%%-*}"; ver="${engine#*-}"
case "$flavour" in
  elasticsearch) product=Elasticsearch; envp=ES ;;
  opensearch) product=OpenSearch; envp=OPENSEARCH ;;
  *) die "ES_ENGINE=$engine: the flavour must be elasticsearch or opensearch (e.g. opensearch-2.19.6)" ;;
esac
[[ "$ver" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "ES_ENGINE=$engine: expected FLAVOUR-X.Y.Z, e.g. elasticsearch-7.17.29"
cache="${ES_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ur-train}"
es_home="$cache/$flavour-$ver"
url_base="https://repo1.maven.org/maven2/org/$flavour/distribution/integ-test-zip/$flavour/$ver/$flavour-$ver.zip"
run_user="${ES_RUN_USER:-urtrain-es}"

# Checksums of distributions published without .sha512/.sha1 next to them
# (Elasticsearch 9's integ-test-zips), taken from a download from Maven Central.
declare -A pinned_sha512=(
  [elasticsearch-9.2.8]=c0addbd2e483e804965f32168917282a76cf030f598ccbc4ef53f99500d0c179977219bd04984889c6aa01ba6410c1f6360b943c4743c2ea84af82052c3aba2d
)

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# ---------------------------------------------------------------- install ---

is_installed() { [[ -f "$es_home/.urtrain-installed" && -x "$es_home/bin/$flavour" ]]; }

install_es() {
  is_installed && return 0
  need curl "install curl (e.g. 'apt-get install curl')"
  need unzip "install unzip (e.g. 'apt-get install unzip')"
  mkdir -p "$cache" || die "cannot create cache dir $cache (set ES_CACHE)"
  # One installer at a time (two `run`s may start together on a cold cache).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.install.lock"
    flock 9
  fi
  if is_installed; then { exec 9>&-; } 2>/dev/null || true; return 0; fi
  local tmp
  tmp="$(mktemp -d "$cache/.install.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  say "downloading $url_base"
  curl -fsSL --retry 3 -o "$tmp/es.zip" "$url_base" || die "download failed: $url_base (is $product $ver published as an integ-test-zip?)"
  local want got
  if command -v sha512sum >/dev/null 2>&1 && want="$(curl -fsL --retry 3 "$url_base.sha512")"; then
    got="$(sha512sum "$tmp/es.zip" | cut -d' ' -f1)"
  elif command -v sha1sum >/dev/null 2>&1 && want="$(curl -fsL --retry 3 "$url_base.sha1")"; then
    got="$(sha1sum "$tmp/es.zip" | cut -d' ' -f1)"
  elif command -v sha512sum >/dev/null 2>&1 && want="${pinned_sha512[$engine]:-}" && [[ -n "$want" ]]; then
    got="$(sha512sum "$tmp/es.zip" | cut -d' ' -f1)"
  else
    die "cannot verify the download of $flavour-$ver.zip (need sha512sum or sha1sum, and the published .sha512/.sha1 or a checksum pinned in this script)"
  fi
  want="${want%% *}"; want="${want//[$'\r\n\t ']/}"
  [[ -n "$want" && "$want" == "$got" ]] || die "checksum mismatch for $flavour-$ver.zip (want $want, got $got)"
  unzip -q "$tmp/es.zip" -d "$tmp/x" || die "unzip failed"
  [[ -x "$tmp/x/$flavour-$ver/bin/$flavour" ]] || die "unexpected archive layout"
  chmod -R a+rX "$tmp/x/$flavour-$ver"   # readable by the ES user when root runs it
  rm -rf "$es_home"
  mv "$tmp/x/$flavour-$ver" "$es_home"
  touch "$es_home/.urtrain-installed"
  rm -rf "$tmp"; trap - EXIT
  { exec 9>&-; } 2>/dev/null || true
  say "installed $product $ver in $es_home"
}

# ------------------------------------------------------------------- java ---

java_ok() {  # $1 = a JDK home; the distribution's own checker decides
  # (lib/java-version-checker/ in ES 8+, lib/java-version-checker-V.jar before and in OpenSearch)
  [[ -x "$1/bin/java" ]] && "$1/bin/java" -cp "$es_home/lib/java-version-checker/*:$es_home/lib/java-version-checker-$ver.jar" \
    "org.$flavour.tools.java_version_checker.JavaVersionChecker" >/dev/null 2>&1 \
    && java_fits "$1"
}

# The checker knows only the minimum; ES 7.17 needs the SecurityManager, gone in Java 24.
java_fits() {
  local v
  v="$("$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  [[ "$v" =~ ^[0-9]+$ ]] || return 1
  ! [[ $flavour == elasticsearch && ${ver%%.*} -lt 8 && $v -gt 21 ]]
}

java_need() {
  case "$flavour-${ver%%.*}" in
    elasticsearch-7) echo "a JDK 17 to 21" ;;
    elasticsearch-8|opensearch-2) echo "a JDK 17+" ;;
    *) echo "a JDK 21+" ;;
  esac
}

pick_java() {
  if [[ -n "${ES_JAVA_HOME:-}" ]]; then
    java_ok "$ES_JAVA_HOME" || die "ES_JAVA_HOME=$ES_JAVA_HOME is not a JDK that $product $ver accepts (needs $(java_need))"
    echo "$ES_JAVA_HOME"; return
  fi
  local cands=() j
  if j="$(command -v java 2>/dev/null)"; then
    j="$(readlink -f "$j")"; cands+=("${j%/bin/java}")
  fi
  [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
  for j in /usr/lib/jvm/*; do [[ -d "$j" ]] && cands+=("$j"); done
  for j in "${cands[@]}"; do
    if java_ok "$j"; then echo "$j"; return; fi
  done
  die "no usable java found ($product $ver needs $(java_need): install one (e.g. 'apt-get install openjdk-17-jdk-headless'; for 21+ a Temurin JDK in /usr/lib/jvm) or set ES_JAVA_HOME)"
}

# ------------------------------------------------------------- run helpers ---

usage() {
  die "usage: $0 install | java | run --port N --data DIR [--heap 512m] [--transport-port N] [--security [--user U] [--password P]] [--no-stdin] [--quiet] [--timeout S] | start (same options as run) | stop --data DIR"
}

port=""; data=""; heap="512m"; tport="0"; security=0; es_user_name="urtrain"
es_password="urtrain-test"; watch_stdin=1; quiet=0; timeout_s=180

parse_run_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) port="${2:-}"; shift 2 ;;
      --data) data="${2:-}"; shift 2 ;;
      --heap) heap="${2:-}"; shift 2 ;;
      --transport-port) tport="${2:-}"; shift 2 ;;
      --security) security=1; shift ;;
      --user) es_user_name="${2:-}"; shift 2 ;;
      --password) es_password="${2:-}"; shift 2 ;;
      --no-stdin) watch_stdin=0; shift ;;
      --quiet) quiet=1; shift ;;
      --timeout) timeout_s="${2:-}"; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || die "--port N is required (1-65535)"
  [[ -n "$data" ]] || die "--data DIR is required"
  [[ "$tport" =~ ^[0-9]+(-[0-9]+)?$ ]] || die "--transport-port must be a port or a range A-B"
  [[ "$heap" =~ ^[0-9]+[kKmMgG]?$ ]] || die "--heap must look like 512m or 1g"
  [[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout must be seconds"
  if [[ $security == 1 ]]; then
    [[ "$es_user_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--user must be [A-Za-z0-9_.-]+"
    [[ ${#es_password} -ge 6 ]] || die "--password must have at least 6 characters"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_run_user() {
  id -u "$run_user" >/dev/null 2>&1 && return 0
  need useradd "cannot create user $run_user (install 'passwd' or set ES_RUN_USER to an existing user)"
  local nologin=/usr/sbin/nologin; [[ -x $nologin ]] || nologin=/bin/false
  useradd --system --no-create-home --home-dir /nonexistent --shell "$nologin" \
      --user-group "$run_user" >/dev/null 2>&1 \
    || id -u "$run_user" >/dev/null 2>&1 \
    || die "could not create system user $run_user"
  say "created system user $run_user (Elasticsearch refuses to run as root)"
}

# `as_es CMD...`: run CMD as the ES user (root) or as ourselves.
as_es() {
  if [[ $EUID -eq 0 ]]; then
    setpriv --reuid="$run_user" --regid="$run_user" --clear-groups -- "$@"
  else
    "$@"
  fi
}

# Fill $dir with config/ (a copy of the distribution's, writable: ES creates the
# keystore there), data/, logs/, tmp/; write our settings.
prepare_instance() {
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
  if [[ ! -f "$dir/config/.urtrain-config" ]]; then
    rm -rf "$dir/config"
    cp -R "$es_home/config" "$dir/config"
    touch "$dir/config/.urtrain-config"
  fi
  mkdir -p "$dir/config/jvm.options.d"
  # ES 7 and OpenSearch start the JVM in their home directory: their relative
  # gc log, error file and heap dump paths must point into $dir instead.
  sed -i -e "s#=logs/#=$dir/logs/#g" -e "s#HeapDumpPath=data\$#HeapDumpPath=$dir/data#" "$dir/config/jvm.options"
  # No pre-touching of the whole heap: ~180 MB less RSS for a test server.
  printf -- '-Xms%s\n-Xmx%s\n-XX:-AlwaysPreTouch\n' "$heap" "$heap" \
    >"$dir/config/jvm.options.d/urtrain-heap.options"
  local yml="$dir/config/$flavour.yml"
  cat >"$yml" <<EOF
# written by scripts/elasticsearch.sh on every run; edits are lost
cluster.name: urtrain-es
node.name: $node_name
network.host: 127.0.0.1
http.port: $port
transport.port: $tport
discovery.type: single-node
path.data: $dir/data
path.logs: $dir/logs
# test disks are small or full: never go read-only or refuse shards over disk use
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  # OpenSearch's integ-test-zip has no security plugin (and no xpack settings).
  if [[ -d "$es_home/modules/x-pack-core" ]]; then
    echo "xpack.security.enabled: $([[ $security == 1 ]] && echo true || echo false)" >>"$yml"
  fi
  if [[ $security == 1 ]]; then
    cat >>"$yml" <<EOF
xpack.security.http.ssl.enabled: false
xpack.security.transport.ssl.enabled: false
# Only the file realm works: whatever needs the .security index (native users
# and roles, the built-in elastic user, API keys, tokens) cannot, because this
# distribution lacks analysis-common (the index's pattern_capture filter), so
# that index is never created. Switched off where a setting exists, to fail fast.
xpack.security.authc.reserved_realm.enabled: false
xpack.security.authc.api_key.enabled: false
xpack.security.authc.token.enabled: false
EOF
    # ...and no start-up WARN stack traces from syncing built-in roles into it.
    echo '-Des.queryable_built_in_roles_enabled=false' >"$dir/config/jvm.options.d/urtrain-security.options"
  else
    rm -f "$dir/config/jvm.options.d/urtrain-security.options"
  fi
  if [[ $EUID -eq 0 ]]; then
    chown -R "$run_user:$run_user" "$dir"
    # The cache is often under /root (mode 700): give the ES user a hard-linked
    # (or, across file systems, copied) view of the distribution inside $dir.
    if ! as_es test -r "$es_home/lib/$flavour-$ver.jar"; then
      run_home="$dir/$flavour-$ver"
      if [[ ! -f "$run_home/.urtrain-installed" ]]; then
        rm -rf "$run_home"
        cp -al "$es_home" "$run_home" 2>/dev/null || { rm -rf "$run_home"; cp -a "$es_home" "$run_home"; }
      fi
    fi
    as_es test -w "$dir/data" || die "user $run_user cannot reach $dir (a parent directory is not traversable, e.g. under /root); use a --data dir elsewhere, e.g. under /tmp"
  fi
}

# Start bin/elasticsearch in the background; sets es_pid. --pdeathsig: if this
# script dies without cleaning up (SIGKILL), the ES CLI still gets SIGTERM.
launch_es() {
  local cmd=(setpriv)
  [[ $EUID -eq 0 ]] && cmd+=(--reuid="$run_user" --regid="$run_user" --clear-groups)
  cmd+=(--pdeathsig TERM -- env -u JAVA_TOOL_OPTIONS -u _JAVA_OPTIONS -u JAVA_HOME -u JAVA_OPTS
        HOME="$dir" "${envp}_JAVA_HOME=$java_home" "${envp}_PATH_CONF=$dir/config" "${envp}_TMPDIR=$dir/tmp"
        "$run_home/bin/$flavour" -p "$dir/es.pid")
  rm -f "$dir/es.pid"
  if [[ $quiet == 1 ]]; then
    (cd "$dir" && exec "${cmd[@]}" </dev/null >>"$dir/logs/console.log" 2>&1) &
  else
    (cd "$dir" && exec "${cmd[@]}" </dev/null 1>&2) &
  fi
  es_pid=$!
}

es_alive() { [[ -n "${es_pid:-}" ]] && kill -0 "$es_pid" 2>/dev/null; }

server_pid() { [[ -s "$dir/es.pid" ]] && cat "$dir/es.pid"; }

stop_es() {
  local spid i
  spid="$(server_pid || true)"
  if es_alive; then
    kill -TERM "$es_pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do es_alive || break; sleep 0.1; done
    if es_alive; then
      say "$product did not stop within 60 s; killing it"
      kill -KILL "$es_pid" 2>/dev/null || true
    fi
    wait "$es_pid" 2>/dev/null || true
  fi
  # The server JVM exits when its CLI parent goes; make sure of it.
  if [[ -n "$spid" ]] && kill -0 "$spid" 2>/dev/null; then
    for ((i = 0; i < 100; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$spid" 2>/dev/null || true
  fi
  es_pid=""
}

cleanup_and_exit() {
  trap - TERM INT HUP
  if [[ -n "${watch_pid:-}" ]]; then kill "$watch_pid" 2>/dev/null || true; fi
  stop_es
  exit "${1:-0}"
}

run_es() {
  parse_run_args "$@"
  need curl "install curl (e.g. 'apt-get install curl')"
  install_es >&2
  need setpriv "install util-linux (e.g. 'apt-get install util-linux')"
  mkdir -p "$data" || die "cannot create $data"
  dir="$(cd "$data" && pwd)"
  if port_in_use "$port"; then die "port $port on 127.0.0.1 is already in use"; fi
  java_home="$(pick_java)"
  run_home="$es_home"
  node_name="urtrain-es-$port-$$"
  if [[ $security == 1 && ! -d "$es_home/modules/x-pack-security" ]]; then
    die "--security: the $product $ver integ-test-zip has no security module; run it without --security"
  fi
  [[ $EUID -eq 0 ]] && ensure_run_user
  prepare_instance

  local auth=()
  if [[ $security == 1 ]]; then
    # A file-realm superuser (config/users, config/users_roles). elasticsearch-users
    # costs a JVM start (~3 s): skip it when this DIR already has the same user+password.
    local stamp="$dir/config/.urtrain-user" want
    want="$es_user_name $(printf '%s' "$es_user_name:$es_password" | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] || ! grep -qs "^$es_user_name:" "$dir/config/users"; then
      local uenv=(env HOME="$dir" ES_JAVA_HOME="$java_home" ES_PATH_CONF="$dir/config")
      if grep -qs "^$es_user_name:" "$dir/config/users"; then
        (cd "$dir" && as_es "${uenv[@]}" "$run_home/bin/elasticsearch-users" userdel "$es_user_name") >&2 \
          || die "elasticsearch-users userdel failed"
      fi
      (cd "$dir" && as_es "${uenv[@]}" "$run_home/bin/elasticsearch-users" useradd "$es_user_name" \
          -p "$es_password" -r superuser) >&2 || die "elasticsearch-users useradd failed"
      echo "$want" >"$stamp"
    fi
    auth=(-u "$es_user_name:$es_password")
    say "security on: HTTP basic auth as $es_user_name (superuser)"
  fi

  say "starting $product $ver on 127.0.0.1:$port (java: $java_home, data: $dir)"
  trap 'cleanup_and_exit 0' TERM INT HUP
  launch_es

  # Watch stdin only when it is a pipe: its EOF means our owner is gone.
  watch_pid=""
  if [[ $watch_stdin == 1 && -p /dev/stdin ]]; then
    # (pdeathsig: no stray reader is left holding the pipe if we are SIGKILLed)
    setpriv --pdeathsig KILL -- cat >/dev/null <&0 &
    watch_pid=$!
  fi

  local url="http://127.0.0.1:$port" deadline=$((SECONDS + timeout_s)) body
  while :; do
    if ! es_alive; then
      local rc=0; wait "$es_pid" || rc=$?
      es_pid=""
      if [[ -n "$watch_pid" ]]; then kill "$watch_pid" 2>/dev/null || true; fi
      die "$product exited (status $rc) before it was ready; see the output above and $dir/logs/"
    fi
    if [[ -n "$watch_pid" ]] && ! kill -0 "$watch_pid" 2>/dev/null; then
      say "stdin closed before Elasticsearch was ready; stopping it"
      cleanup_and_exit 0
    fi
    if ((SECONDS > deadline)); then
      say "$product not ready after ${timeout_s}s; stopping it (logs in $dir/logs/)"
      cleanup_and_exit 1
    fi
    # Our node (not some other server that took the port) and a yellow+ cluster.
    # (This distribution has no `GET /`: that is the rest-root module, not shipped.)
    if body="$(curl -s -m 5 "${auth[@]}" "$url/_nodes/_local?filter_path=nodes.*.name" 2>/dev/null)" \
        && [[ "$body" == *"\"name\":\"$node_name\""* ]] \
        && body="$(curl -s -m 10 "${auth[@]}" "$url/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null)" \
        && [[ "$body" == *'"timed_out":false'* && "$body" =~ \"status\":\"(green|yellow)\" ]]; then
      break
    fi
    sleep 0.2
  done
  echo "Ready $url"

  # Wait for ES to exit by itself, for stdin EOF, or for a signal (trap).
  if [[ -n "$watch_pid" ]]; then
    wait -n "$es_pid" "$watch_pid" || true
  else
    wait "$es_pid" || true
  fi
  while es_alive && [[ -n "$watch_pid" ]] && kill -0 "$watch_pid" 2>/dev/null; do
    wait -n "$es_pid" "$watch_pid" || true   # woken by an unrelated child
  done
  if es_alive; then
    cleanup_and_exit 0    # stdin reached EOF
  fi
  local rc=0; wait "$es_pid" || rc=$?
  es_pid=""
  if [[ -n "$watch_pid" ]]; then kill "$watch_pid" 2>/dev/null || true; fi
  say "$product exited on its own (status $rc); logs in $dir/logs/"
  exit $((rc == 0 ? 1 : rc))
}

# -------------------------------------------------------------- start/stop ---

start_es() {
  parse_run_args "$@"
  mkdir -p "$data" || die "cannot create $data"
  dir="$(cd "$data" && pwd)"
  local pid
  if [[ -s "$dir/run.pid" ]] && pid="$(cat "$dir/run.pid")" && kill -0 "$pid" 2>/dev/null; then
    die "already running in $dir (pid $pid); use: $0 stop --data $dir"
  fi
  rm -f "$dir/run.out"
  need setsid "install util-linux"
  setsid "$self" run --no-stdin "$@" </dev/null >"$dir/run.out" 2>"$dir/run.err" &
  pid=$!
  echo "$pid" >"$dir/run.pid"
  local deadline=$((SECONDS + timeout_s + 30))
  while :; do
    if grep -q '^Ready ' "$dir/run.out" 2>/dev/null; then
      sed -n 's/^Ready //p' "$dir/run.out"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/run.pid"
      tail -n 30 "$dir/run.err" >&2 || true
      die "$product failed to start (full output in $dir/run.err, logs in $dir/logs/)"
    fi
    ((SECONDS > deadline)) && die "not ready in time; see $dir/run.err (still running as pid $pid: $0 stop --data $dir)"
    sleep 0.2
  done
}

stop_bg() {
  data=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --data) data="${2:-}"; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ -n "$data" ]] || die "--data DIR is required"
  [[ -d "$data" ]] || die "no such directory: $data"
  dir="$(cd "$data" && pwd)"
  local pid i
  if [[ ! -s "$dir/run.pid" ]] || ! pid="$(cat "$dir/run.pid")" || ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$dir/run.pid"
    say "not running in $dir"
    return 0
  fi
  kill -TERM "$pid"
  for ((i = 0; i < 900; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "did not stop within 90 s; killing"
    kill -KILL "$pid" 2>/dev/null || true
    if [[ -s "$dir/es.pid" ]]; then kill -KILL "$(cat "$dir/es.pid")" 2>/dev/null || true; fi
  fi
  rm -f "$dir/run.pid"
  say "stopped (pid $pid)"
}

sub="${1:-}"
[[ $# -gt 0 ]] && shift
case "$sub" in
  install) [[ $# -eq 0 ]] || usage; install_es >&2; echo "$es_home" ;;
  java) [[ $# -eq 0 ]] || usage; install_es >&2; pick_java ;;
  run) run_es "$@" ;;
  start) start_es "$@" ;;
  stop) stop_bg "$@" ;;
  *) usage ;;
esac
