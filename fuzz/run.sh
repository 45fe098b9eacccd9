#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer on the nightly toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Seeds (committed) live in fuzz/seeds/<target>/; each run copies them into a scratch corpus
# (fuzz/corpus/<target>/, git-ignored) so libFuzzer can add to it without touching the seeds.
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script exit non-zero:
# reproduce with `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-...`, fix it,
# and add the input as a regression test in the main crate (tests/properties.rs).
#
# Without a nightly toolchain this prints why and exits 0 (fuzzing is an extra, not a gate on
# machines that cannot run it). cargo-fuzz is installed from crates.io when missing.
#
# Built without a sanitizer (`-s none`): the crate is `#![forbid(unsafe_code)]`, so AddressSanitizer
# would only instrument dependencies, at twice the build time; panics, overflow checks
# (debug assertions are on), timeouts and out-of-memory are what these targets look for.
set -euo pipefail

SECONDS_EACH="${1:-60}"
shift || true
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_TARGETS=(client_hello proxy_protocol annotations manifest)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz/run.sh: no nightly toolchain; skipping fuzzing (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz/run.sh: cargo-fuzz could not be installed; skipping fuzzing"
        exit 0
    fi
fi

cd "$HERE"
FUZZ_FLAGS=(--sanitizer none --debug-assertions)
echo "fuzz/run.sh: building the fuzz targets"
cargo +nightly fuzz build "${FUZZ_FLAGS[@]}"

status=0
for target in "${TARGETS[@]}"; do
    corpus="$HERE/corpus/$target"
    mkdir -p "$corpus" "$HERE/artifacts/$target"
    if [ -d "$HERE/seeds/$target" ]; then
        cp -n "$HERE/seeds/$target"/* "$corpus"/ 2>/dev/null || true
    fi
    extra=()
    if [ -f "$HERE/$target.dict" ]; then extra+=(-dict="$HERE/$target.dict"); fi
    log="$HERE/artifacts/$target/last-run.log"
    echo "fuzz/run.sh: $target for ${SECONDS_EACH}s"
    start=$(date +%s)
    if cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$target" "$corpus" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -max_len=20000 -print_final_stats=1 ${extra[@]+"${extra[@]}"} >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "fuzz/run.sh: $target ok: $runs runs in $(( $(date +%s) - start ))s"
    else
        status=1
        echo "fuzz/run.sh: $target FAILED (log: $log)"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 || tail -n 40 "$log"
    fi
done
exit "$status"
