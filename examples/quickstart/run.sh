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

# The traps come before anything is started, so a Ctrl-C at any moment stops what has been.
# On exit, the backends (`$!`, the one job put in the background: read in the trap itself, so
# a signal between starting them and saving their pid cannot leave them behind) are stopped
# and waited for.
trap 'if [ -n "${!:-}" ]; then kill "$!" 2>/dev/null || true; wait "$!" 2>/dev/null || true; fi' EXIT
# A non-interactive bash dies of SIGINT/SIGTERM without running the EXIT trap when the signal
# comes while it is not waiting for a foreground command (between two commands, say), and the
# backends ignore SIGINT (bash starts background jobs so): exit through the EXIT trap instead.
# While Portcullis runs in the foreground, bash lets it stop first and then runs this.
trap 'exit 130' INT
trap 'exit 143' TERM

# One build first, so the two `cargo run`s below do not wait on each other's build lock.
cargo build --locked --quiet --example demo_backends --bin portcullis
cargo run --locked --quiet --example demo_backends &
cargo run --locked --quiet -- standalone --manifests examples/quickstart/manifests \
  --http-addr 127.0.0.1:8080 --https-addr 127.0.0.1:8443 --admin-addr 127.0.0.1:10254 "$@"
