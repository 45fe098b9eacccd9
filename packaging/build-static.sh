#!/usr/bin/env bash
# The one command that builds the static release binary. The Dockerfile's builder stage and
# .ci/packaging.sh both run this script, so the image and CI cannot build differently.
#
# Target: x86_64-unknown-linux-musl. aws-lc-sys (rustls' crypto provider) compiles C, so the C
# compiler must target musl too: Debian's `musl-tools` provides `musl-gcc`. The result is a
# static-pie executable with no dynamic loader and no libc to ship, which is what a `FROM scratch`
# image needs. (glibc with `+crt-static` also links here, but static glibc still wants its own
# shared NSS modules at run time for getaddrinfo; musl has no such trap.)
#
# Needs: rustup target `x86_64-unknown-linux-musl`, `musl-gcc` on PATH.
# Prints the path of the binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"

cargo build --release --locked --target "$target" --bin portcullis >&2

echo "${CARGO_TARGET_DIR:-target}/$target/release/portcullis"
