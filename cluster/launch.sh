#!/usr/bin/env bash
# Starts ur-train on every host of a hosts file over ssh, streams their logs
# prefixed with the host name, and exits with the worst exit status.
#
#   cluster/launch.sh cluster/hosts.txt --workers 8 --engine /opt/ur/jobs/shop.json \
#       --input hdfs://master:9000/events/ --output hdfs://master:9000/models/shop
#
# Every process runs the same command with --hosts and --process N added.
# Needs passwordless ssh to every host (the seed guide sets it up), ur-train
# on each host's PATH (or UR_TRAIN=/path/to/ur-train), and the engine file at
# the same path on every host. The hosts file is copied to each host.
#   LOCAL=1   run the processes here instead of over ssh (the local rehearsal
#             with cluster/hosts.local.txt)
#   LOGS=DIR  also keep each host's log in DIR/<host>.log
#   UR_CLUSTER_SECRET  the secret the processes prove to each other; if it is
#             unset, a fresh random one is made for this run. It reaches each
#             host on ssh's standard input, never on a command line.
set -uo pipefail
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
HOSTS=$1; shift
[ -r "$HOSTS" ] || { echo "launch: cannot read hosts file $HOSTS" >&2; exit 2; }
UR_TRAIN=${UR_TRAIN:-ur-train}
mapfile -t LINES < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$HOSTS")
[ ${#LINES[@]} -gt 0 ] || { echo "launch: no hosts in $HOSTS" >&2; exit 2; }
REMOTE_HOSTS=/tmp/ur-train-hosts.$$.txt
if [ -z "${UR_CLUSTER_SECRET:-}" ]; then
  UR_CLUSTER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export UR_CLUSTER_SECRET
[ -n "${LOGS:-}" ] && mkdir -p "$LOGS"

quote() { printf '%q ' "$@"; }
pids=(); names=()
for i in "${!LINES[@]}"; do
  host=${LINES[$i]%:*}
  if [ -n "${LOCAL:-}" ]; then
    cmd=("$UR_TRAIN" --hosts "$HOSTS" --process "$i" "$@")
  else
    scp -q -o BatchMode=yes "$HOSTS" "$host:$REMOTE_HOSTS" || { echo "launch: cannot copy the hosts file to $host" >&2; exit 2; }
    # The remote shell reads the secret from standard input into its environment.
    cmd=(ssh -o BatchMode=yes "$host" \
      "IFS= read -r UR_CLUSTER_SECRET && export UR_CLUSTER_SECRET && exec $(quote "$UR_TRAIN" --hosts "$REMOTE_HOSTS" --process "$i" "$@")")
  fi
  log=${LOGS:+$LOGS/$host-$i.log}
  ( printf '%s\n' "$UR_CLUSTER_SECRET" | "${cmd[@]}" 2>&1 | while IFS= read -r line; do
      printf '%s[%d] %s\n' "$host" "$i" "$line"
      [ -n "$log" ] && printf '%s\n' "$line" >> "$log"
    done
    exit "${PIPESTATUS[1]}" ) &
  pids+=($!); names+=("$host[$i]")
done

worst=0
for k in "${!pids[@]}"; do
  wait "${pids[$k]}"; code=$?
  echo "launch: ${names[$k]} exited with $code" >&2
  [ "$code" -gt "$worst" ] && worst=$code
done
if [ "$worst" -ne 0 ]; then
  echo "launch: the run failed; no model was published. Rerun when the hosts are back: training is idempotent." >&2
fi
exit "$worst"
