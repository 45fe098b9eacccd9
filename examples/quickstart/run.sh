#!/usr/bin/env bash
# The quickstart in one command: the demo backends (examples/demo_backends.rs) in the
# background, Portcullis standalone in the foreground on unprivileged ports, serving
# examples/quickstart/manifests. Ctrl-C stops both: the backends are killed when this script
# exits, however it exits, so none is left holding ports 9001, 9002, 9443 and 9444.
#
#   bash examples/quickstart/run.sh [more `portcullis standalone` flags]
#
# A debug build, as in examples/quickstart/README.md and `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

# One build first, so the two `cargo run`s below do not wait on each other's build lock.
cargo build --locked --quiet --example demo_backends --bin portcullis
cargo run --locked --quiet --example demo_backends &
backends=$!
trap 'kill "$backends" 2>/dev/null || true; wait "$backends" 2>/dev/null || true' EXIT
cargo run --locked --quiet -- standalone --manifests examples/quickstart/manifests \
  --http-addr 127.0.0.1:8080 --https-addr 127.0.0.1:8443 --admin-addr 127.0.0.1:10254 "$@"
