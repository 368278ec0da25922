#!/usr/bin/env bash
# benches/check.sh -- how `switchyard check` scales with the number of
# backends (it used to be quadratic: each backend was compared with every
# earlier one of its pool to find duplicates).
#
# For each N in SIZES (default "10000 80000 100000") it writes a config with
# one pool of N distinct IP backends ("127.a.b.c:80"), runs
# `$SWITCHYARD_BIN check -c FILE` RUNS times (default 3) and prints the
# fastest wall time, and the time per backend. Files go to a temp dir,
# removed on exit; nothing listens, nothing is resolved.
#
#   SWITCHYARD_BIN=target/release/switchyard benches/check.sh
#   SIZES="100000" RUNS=5 SWITCHYARD_BIN=target/release/switchyard benches/check.sh
set -euo pipefail

BIN=${SWITCHYARD_BIN:-target/release/switchyard}
SIZES=${SIZES:-"10000 80000 100000"}
RUNS=${RUNS:-3}
[ -x "$BIN" ] || { echo "no switchyard binary at $BIN (cargo build --release)" >&2; exit 2; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

printf '%10s  %10s  %14s\n' backends seconds "us/backend"
for n in $SIZES; do
  file="$dir/n$n.toml"
  python3 - "$n" >"$file" <<'PY'
import sys
n = int(sys.argv[1])
print("[pools.blue]\nbackends = [")
for i in range(n):
    print(f'  "127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:80",')
print("]")
PY
  best=""
  for _ in $(seq "$RUNS"); do
    # Microseconds from bash's own clock (no bc or GNU date needed).
    start=${EPOCHREALTIME/./}
    timeout 600 "$BIN" check -c "$file" >/dev/null
    t=$(( ${EPOCHREALTIME/./} - start ))
    if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
  done
  printf '%10d  %6d.%03d  %14d\n' "$n" $((best / 1000000)) $((best / 1000 % 1000)) $((best / n))
done
