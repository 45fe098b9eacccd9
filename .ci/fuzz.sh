#!/usr/bin/env bash
# Fuzzing in CI: every cargo-fuzz target (fuzz/) for a bounded time, only where a nightly
# toolchain is installed; otherwise a message and success. Called from .ci/run.
#
#   .ci/fuzz.sh [SECONDS]    default 60 per target (4 targets), plus the first build (~10 min
#                            on 2 cores; fuzz/target is reused afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q nightly; then
    echo ".ci/fuzz.sh: no nightly toolchain; skipping fuzzing"
    exit 0
fi
exec fuzz/run.sh "${1:-60}"
