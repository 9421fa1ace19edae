#!/usr/bin/env bash
# The test command: sets up what the tests need, once, then runs them.
#
#   scripts/test.sh            everything: installs what is missing (Java, Maven,
#                              curl, unzip: with apt-get, as root or via sudo),
#                              fetches Hadoop's MiniDFSCluster (Maven Central, into
#                              ~/.m2) and the search engines of the compatibility
#                              matrix (integ-test-zips from Maven Central, into
#                              ~/.cache/ur-train), then runs `cargo test` (with
#                              Elasticsearch 8.19) and the Elasticsearch tests
#                              once more on every other engine of the matrix.
#   scripts/test.sh --fast     the unit and single-process tests only: no Java,
#                              no HDFS, no search engine, nothing installed
#                              (`cargo test --lib --bins`, then
#                              `cargo test --test tests -- --skip elasticsearch:: --skip hdfs::`).
#
# Environment:
#   UR_TEST_ENGINES   the matrix, space-separated FLAVOUR-VERSION (default below;
#                     the first one is the engine of `cargo test`); "" = only
#                     `cargo test` with Elasticsearch 8.19.
#   UR_TEST_STRICT=1  an engine that cannot run here (no suitable Java) fails the
#                     command instead of being skipped with a warning.
#   ES_CACHE          where the engines are cached (default ~/.cache/ur-train).
#   Extra arguments go to every `cargo test`, e.g. `scripts/test.sh --locked`.
#
# Every step says what it does; a step that fails stops the command with one
# line naming what is missing, before any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

default_engines="elasticsearch-8.19.21 elasticsearch-7.17.29 elasticsearch-9.2.8 opensearch-2.19.6 opensearch-3.6.0"
engines="${UR_TEST_ENGINES-$default_engines}"
strict="${UR_TEST_STRICT:-0}"

step=0
say() { echo "test.sh: $*" >&2; }
next() { step=$((step + 1)); echo "==> [$step] $*" >&2; }
fail() { echo "test.sh: FAILED: $*" >&2; exit 1; }

fast=0
cargo_args=()
for a in "$@"; do
  case "$a" in
    --fast) fast=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) cargo_args+=("$a") ;;
  esac
done

command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"

if [[ $fast == 1 ]]; then
  next "fast path: unit tests"
  cargo test "${cargo_args[@]}" --lib --bins || fail "unit tests"
  next "fast path: integration tests but HDFS and Elasticsearch (no Java)"
  # (separate runs: --skip matches anywhere, and unit tests live in sink::elasticsearch:: too)
  cargo test "${cargo_args[@]}" --test tests -- --skip elasticsearch:: --skip hdfs:: || fail "integration tests"
  exit 0
fi

# ------------------------------------------------------------ system packages

java_feature() {  # $1 = java binary; prints its feature version (17, 21, ...)
  "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p'
}

# A JDK 17+ for MiniDFS and the engines that run on 17: `java` on PATH, else
# one in /usr/lib/jvm.
find_java17() {
  local j v
  for j in "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$j" && -x "$j" ]] || continue
    [[ -x "$(dirname "$j")/javac" ]] || continue   # a JDK, not a JRE
    v="$(java_feature "$j")"
    if [[ "$v" =~ ^[0-9]+$ && $v -ge 17 ]]; then echo "$j"; return 0; fi
  done
  return 1
}

apt_install() {  # installs the given Debian packages, or fails naming them
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
      || fail "missing: $* — install them (e.g. 'sudo apt-get install $*') and rerun"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || fail "missing: $* — no apt-get here: install them with your package manager and rerun"
  say "apt-get install $*"
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || say "warning: apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || fail "apt-get install $* failed (see above); install them and rerun"
}

apt_has() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; }

next "system packages: Java 17+, Maven, curl, unzip, util-linux"
missing=()
java_bin="$(find_java17 || true)"
[[ -n "$java_bin" ]] || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
if [[ $EUID -eq 0 ]] && ! command -v useradd >/dev/null 2>&1; then missing+=(passwd); fi
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ " ${missing[*]} " == *" openjdk-17-jdk-headless "* ]] && command -v apt-get >/dev/null 2>&1; then
    # Newer releases (Debian 13, Ubuntu 24.04) may offer only 21: take what exists.
    apt-get update -qq >/dev/null 2>&1 || true
    if ! apt_has openjdk-17-jdk-headless && apt_has openjdk-21-jdk-headless; then
      missing=("${missing[@]/openjdk-17-jdk-headless/openjdk-21-jdk-headless}")
    fi
  fi
  apt_install "${missing[@]}"
  java_bin="$(find_java17 || true)"
  [[ -n "$java_bin" ]] || fail "no JDK 17+ after installing ${missing[*]}"
fi
export JAVA="$java_bin"     # scripts/minidfs.sh
say "java: $java_bin ($(java_feature "$java_bin")), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g')"

# Java 21+ for Elasticsearch 9 and OpenSearch 3: a JDK in /usr/lib/jvm (e.g.
# Temurin), or the system's package if it offers one.
needs_java21=0
for e in $engines; do
  case "$e" in elasticsearch-[0-7].*|elasticsearch-8.*|opensearch-[0-2].*) ;; *) needs_java21=1 ;; esac
done
if [[ $needs_java21 == 1 ]]; then
  has21=0
  for j in /usr/lib/jvm/*/bin/java; do
    [[ -x "$j" ]] || continue
    v="$(java_feature "$j")"
    if [[ "$v" =~ ^[0-9]+$ && $v -ge 21 ]]; then has21=1; break; fi
  done
  if [[ $has21 == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    next "Java 21+ for Elasticsearch 9 and OpenSearch 3"
    apt-get update -qq >/dev/null 2>&1 || true
    for p in openjdk-21-jdk-headless openjdk-25-jdk-headless; do
      if apt_has "$p"; then apt_install "$p"; break; fi
    done
  fi
fi

# ---------------------------------------------------------------- MiniDFS

next "Hadoop MiniDFSCluster: hadoop-minicluster from Maven Central (into ~/.m2, once) and its harness"
scripts/minidfs.sh prepare || fail "scripts/minidfs.sh prepare (Maven could not fetch hadoop-minicluster or compile the harness: see above)"

# ---------------------------------------------------------- search engines

runnable=()
skipped=()
for e in $engines; do
  next "$e: integ-test-zip from Maven Central (into ${ES_CACHE:-~/.cache/ur-train}, once) and a JDK for it"
  ES_ENGINE="$e" scripts/elasticsearch.sh install >/dev/null || fail "could not install $e (see above)"
  if jdk="$(ES_ENGINE="$e" scripts/elasticsearch.sh java 2>/tmp/ur-test-java.$$)"; then
    say "$e runs on $jdk"
    runnable+=("$e")
  else
    why="$(cat /tmp/ur-test-java.$$)"
    [[ $strict == 1 ]] && { rm -f /tmp/ur-test-java.$$; fail "$why"; }
    say "WARNING: skipping $e: $why"
    skipped+=("$e")
  fi
  rm -f /tmp/ur-test-java.$$
done

# ------------------------------------------------------------------- tests

first="${runnable[0]:-elasticsearch-8.19.21}"
if [[ -z "$engines" ]]; then first=elasticsearch-8.19.21; fi
results=()
t0=$SECONDS
next "cargo test (all tests; the Elasticsearch tests on $first)"
ES_ENGINE="$first" cargo test "${cargo_args[@]}" || fail "cargo test (with $first)"
results+=("$first: all tests passed ($((SECONDS - t0)) s)")
for e in "${runnable[@]:1}"; do
  t0=$SECONDS
  next "the Elasticsearch tests on $e"
  ES_ENGINE="$e" cargo test "${cargo_args[@]}" --test tests elasticsearch:: || fail "the Elasticsearch tests on $e"
  results+=("$e: elasticsearch:: passed ($((SECONDS - t0)) s)")
done

echo "==> compatibility matrix" >&2
for r in "${results[@]}"; do echo "    $r" >&2; done
for e in "${skipped[@]}"; do echo "    $e: SKIPPED (no suitable Java here)" >&2; done
