#!/usr/bin/env bash
# fuzz/ci.sh -- CI's fuzzing step (run by .ci/run; fuzz/README.md tells how
# to run the targets by hand).
#
# Builds every cargo-fuzz target once, then runs each for FUZZ_SECONDS
# (default 60), FUZZ_JOBS (default 2) at a time, from its seed corpus in
# fuzz/corpus/<target>/. New inputs go to a temp dir, so the seeds in the
# repo stay as they are. A crash, a failed property, memory past 2 GB or
# an input slower than 10 s fails the step: the target's last output lines
# and the input (as text and octal escapes, and the path of its file in
# fuzz/artifacts/) are printed.
#
# Toolchain: nightly when installed. Otherwise stable, with RUSTC_BOOTSTRAP=1
# in case a flag needs a nightly feature: without a sanitizer cargo-fuzz
# passes only flags stable rustc takes (a small cargo-fuzz target built and
# ran on stable rustc 1.95 with and without it). An AddressSanitizer build
# (`-Zsanitizer`) did not build on stable even with RUSTC_BOOTSTRAP=1.
# cargo-fuzz itself is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"request_head chunked_request chunked_response response_scanner config admin_command"}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
echo "fuzz: $(cargo "${toolchain[@]}" --version), $(cargo fuzz --version)${RUSTC_BOOTSTRAP:+ (stable with RUSTC_BOOTSTRAP=1)}"

# No sanitizer: the crate forbids unsafe code, and without ASan each target
# runs about twice as many inputs in its minute. Debug assertions on, so an
# arithmetic overflow is a crash too.
flags=(--sanitizer none --debug-assertions)

start=$SECONDS
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
echo "fuzz: built the targets in $((SECONDS - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# One target's run; its verdict goes to $scratch/<target>.ok or .failed.
run_target() {
  local target=$1 log="$scratch/$1.log" begin=$SECONDS
  mkdir -p "$scratch/$target" "artifacts/$target"
  touch "$scratch/$target.start"
  # The outer timeout only guards against a hung run: libFuzzer stops
  # itself after FUZZ_SECONDS.
  if timeout -k 10 $((FUZZ_SECONDS + 120)) \
      cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" \
        "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz: $target: ${runs:-?} inputs in $((SECONDS - begin)) s, no crash" >"$scratch/$target.ok"
  else
    {
      echo "fuzz: $target FAILED; its last lines:"
      tail -n 40 "$log"
      # The inputs this run saved (crash-*, leak-*, oom-*, timeout-*).
      find "artifacts/$target" -type f -newer "$scratch/$target.start" | while read -r crash; do
        echo "--- input $crash ($(wc -c <"$crash") bytes):"
        od -A d -c "$crash" | head -n 40
      done
    } >"$scratch/$target.failed"
  fi
}

# FUZZ_JOBS targets at a time (default 2: one per core of CI's machine).
running=0
for target in $TARGETS; do
  if [ "$running" -ge "${FUZZ_JOBS:-2}" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$target" &
  running=$((running + 1))
done
wait

failed=()
for target in $TARGETS; do
  if [ -f "$scratch/$target.ok" ]; then
    cat "$scratch/$target.ok"
  else
    cat "$scratch/$target.failed" 2>/dev/null || echo "fuzz: $target: no verdict"
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: all targets ran ${FUZZ_SECONDS} s each without a crash ($((SECONDS - start)) s in all)"
