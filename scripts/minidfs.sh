#!/usr/bin/env bash
# A throwaway HDFS for integration tests: Hadoop's MiniDFSCluster (real NameNode(s)
# and DataNode(s) in one JVM), from scripts/minidfs/.
#
#   scripts/minidfs.sh prepare          resolve + cache the Maven artifacts, compile,
#                                       write scripts/minidfs/target/classpath.txt
#   scripts/minidfs.sh run [args...]    start it (runs `prepare` first if needed);
#                                       args: --port N  --datanodes N  --ha
#                                             --conf-dir DIR  --base-dir DIR  --no-stdin
#
# `run` prints one line on stdout once the cluster is up:
#   Ready hdfs://127.0.0.1:PORT     or     Ready hdfs://minidfs-ns   (--ha)
# then only the answers to commands read from stdin (put LOCAL REMOTE,
# restart-namenode: see MiniDfs.java). Hadoop's logs go to stderr (WARN and up). It stops, exiting 0, when its stdin
# reaches EOF (unless --no-stdin) or on SIGTERM/SIGINT.
# Environment: JAVA (java binary, default `java` on PATH, must be 17+),
#              MINIDFS_JAVA_OPTS (JVM options, default "-Xmx1g -XX:TieredStopAtLevel=1
#              -XX:+UseSerialGC", which starts ~1 s faster; e.g. add
#              -Dlog4j.configuration=file:/path/log4j.properties for more logs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proj="$here/minidfs"
classes="$proj/target/classes"
cpfile="$proj/target/classpath.txt"
stamp="$proj/target/.prepared"

die() { echo "minidfs.sh: $*" >&2; exit 1; }

java_bin="${JAVA:-java}"

need_java() {
  command -v "$java_bin" >/dev/null 2>&1 \
    || die "java not found (need a JDK 17+ on PATH, or set JAVA=/path/to/java)"
}

need_mvn() {
  command -v mvn >/dev/null 2>&1 \
    || die "mvn not found (install Maven, e.g. 'apt-get install maven')"
}

prepare() {
  need_java
  need_mvn
  local v
  v="$("$java_bin" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" =~ ^[0-9]+$ && "${v%%.*}" -ge 17 ]] \
    || die "$java_bin is Java '${v:-unknown}'; need 17 or newer (set JAVA=/path/to/java)"
  # compile puts log4j.properties and urtrain/MiniDfs.class into target/classes;
  # build-classpath writes the runtime classpath (absolute paths into ~/.m2).
  # (Maven 3.8 prints stray ANSI resets even with -q -B: strip them; all of
  # Maven's output goes to stderr.)
  (cd "$proj" && mvn -q -B compile dependency:build-classpath \
      -Dmdep.outputFile="$cpfile" -Dmdep.includeScope=runtime 2>&1 \
    | sed -e 's/\x1b\[[0-9;]*m//g' >&2) \
    || die "prepare failed (mvn compile dependency:build-classpath in $proj)"
  [[ -s "$cpfile" && -f "$classes/urtrain/MiniDfs.class" ]] \
    || die "prepare did not produce $cpfile and the compiled class"
  touch "$stamp"
}

is_prepared() {
  [[ -f "$stamp" && -s "$cpfile" && -f "$classes/urtrain/MiniDfs.class" ]] || return 1
  # Stale if the pom, the sources or resources changed since the last prepare.
  [[ -z "$(find "$proj/pom.xml" "$proj/src" -newer "$stamp" -print -quit)" ]] || return 1
  # Every jar on the classpath must still be in the local Maven repository.
  local jar
  local IFS=:
  for jar in $(cat "$cpfile"); do [[ -e "$jar" ]] || return 1; done
  return 0
}

run() {
  need_java
  if ! is_prepared; then
    echo "minidfs.sh: preparing (first run, or sources changed)..." >&2
    prepare >&2
  fi
  # shellcheck disable=SC2086
  exec "$java_bin" -Dlog4j.configuration=log4j.properties ${MINIDFS_JAVA_OPTS:--Xmx1g -XX:TieredStopAtLevel=1 -XX:+UseSerialGC} \
    -cp "$classes:$(cat "$cpfile")" urtrain.MiniDfs "$@"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  prepare) prepare ;;
  run) run "$@" ;;
  *) die "usage: $0 prepare | run [--port N] [--datanodes N] [--ha] [--conf-dir DIR] [--base-dir DIR] [--no-stdin]" ;;
esac
