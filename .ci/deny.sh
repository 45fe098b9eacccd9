#!/usr/bin/env bash
# Dependency audit: licenses, bans (openssl-sys, serde_yaml/serde_yml, ...; duplicates only warn)
# and sources (crates.io only), with the policy in deny.toml. Called from .ci/run; also runnable
# by hand.
#
# cargo-deny is installed once from crates.io when missing (`cargo install --locked`, a few
# minutes; later runs skip it, so a CI cache of ~/.cargo/bin makes this step take seconds).
#
# Advisories are NOT checked here: `cargo deny check advisories` clones the RustSec advisory
# database from GitHub, which this project's machines cannot reach. Run it where GitHub is
# reachable (`cargo deny check advisories`), or set DENY_ADVISORIES=1 to try it here too.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
if ! cargo deny --version >/dev/null 2>&1; then
    echo ".ci/deny.sh: installing cargo-deny ${CARGO_DENY_VERSION}"
    cargo install cargo-deny --locked --version "${CARGO_DENY_VERSION}"
fi
cargo deny --version

checks=(licenses bans sources)
if [ "${DENY_ADVISORIES:-0}" = "1" ]; then
    checks+=(advisories)
else
    echo ".ci/deny.sh: skipping advisories (the RustSec database cannot be fetched offline)"
fi
cargo deny --locked check --hide-inclusion-graph "${checks[@]}"
