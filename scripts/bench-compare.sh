#!/usr/bin/env bash
# Two ur-train binaries side by side in one run: wall, read, CCO, read rate,
# CPU and peak RSS per event for each, interleaved round by round so both see
# the same machine load, plus a byte comparison of their models. Use it to show
# that a change is within noise (or how far it is not).
#
#   scripts/bench-compare.sh OLD_BIN NEW_BIN [EVENTS_DIR] [ROUNDS]
#
# EVENTS_DIR defaults to bench-data/10m; a missing bench-data/10m is generated
# (10M events), a missing bench-data/ur-large too (the UR's "large" benchmark
# shape: `gen-events --shape ur-large`). Engines: jobs/ur-large.json for a
# directory named ur-large, else jobs/bench-purchase.json and jobs/shop.json;
# ENGINES="a.json b.json" overrides. ROUNDS defaults to 3. The machine's own
# reference lines come first: `cat | wc -c` and, for gzip input,
# `gzip -dc | wc -c` of the same files. Prints markdown for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 DATA=${3:-bench-data/10m} ROUNDS=${4:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ -x "$OLD" ] && [ -x "$NEW" ] || { echo "usage: $0 OLD_BIN NEW_BIN [EVENTS_DIR] [ROUNDS]" >&2; exit 2; }
if [ ! -d "$DATA" ]; then
  cargo build --release --quiet --example gen-events
  echo "generating $DATA ..." >&2
  case "$(basename "$DATA")" in
    ur-large) ./target/release/examples/gen-events --shape ur-large --out "$DATA" ;;
    *) ./target/release/examples/gen-events --events 10000000 --out "$DATA" --files 16 ;;
  esac
fi
if [ -z "${ENGINES:-}" ]; then
  case "$(basename "$DATA")" in
    ur-large) ENGINES=jobs/ur-large.json ;;
    *) ENGINES="jobs/bench-purchase.json jobs/shop.json" ;;
  esac
fi
mapfile -t FILES < <(find "$DATA" -type f \( -name '*.json*' -o -name 'part-*' \) ! -name '_*' ! -name '.*' | sort)
EVENTS=$(cat "${FILES[@]}" | gzip -dcf | wc -l)
echo "machine: $(nproc) cores; data: $DATA, ${#FILES[@]} files, $EVENTS lines; $ROUNDS rounds, old and new alternating"
cat "${FILES[@]}" > /dev/null # warm the page cache for both
reference() { # label decompress-command
  local start bytes ms
  start=$(date +%s%N)
  bytes=$(cat "${FILES[@]}" | $2 | wc -c)
  ms=$((($(date +%s%N) - start) / 1000000))
  printf '%s | wc -c: %s bytes in %d.%02d s\n' "$1" "$bytes" $((ms / 1000)) $((ms % 1000 / 10))
}
reference cat cat
if [ "$(head -c 2 "${FILES[0]}" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
  reference "gzip -dc" "gzip -dc"
fi

run() { # label binary engine workers round
  local label=$1 bin=$2 engine=$3 workers=$4 round=$5
  local dir="$OUT/$label-$(basename "$engine" .json)-$workers-$round"
  /usr/bin/time -f "%e %M %U %S" -o "$dir.time" "$bin" -q --no-progress \
    -e "$engine" -i "$DATA" -o "$dir" -w "$workers" --now 2026-01-15T12:00:00Z
  python3 - "$dir" "$label" "$engine" "$workers" "$EVENTS" <<'PY'
import json, sys
d, label, engine, workers, events = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
m = json.load(open(d + "/manifest.json"))
wall, rss_kb, user, sys_ = open(d + ".time").read().split()
t = m["timings"]
print(f"| {label} | {engine} | {workers} | {float(wall):.2f} | {float(user) + float(sys_):.2f} | {t['read']:.2f} | "
      f"{t['group']:.2f} | {t['cco']:.2f} | {events / t['read'] / 1e6:.2f} | {int(rss_kb) * 1024 / events:.1f} |")
PY
  [ "$label" = old ] || cmp -s "$dir/items.jsonl" "$OUT/old-${dir#"$OUT"/new-}/items.jsonl" \
    || { echo "MODELS DIFFER: $dir" >&2; exit 1; }
}

echo
echo "| binary | engine | workers | wall s | CPU s | read s | group s | CCO s | M events/s read | peak RSS B/event |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for engine in $ENGINES; do
    run old "$OLD" "$engine" 2 "$round"
    run new "$NEW" "$engine" 2 "$round"
  done
done
echo
echo "models: byte-identical in every round"
