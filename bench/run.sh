#!/usr/bin/env bash
# Side-by-side benchmark: Portcullis vs HAProxy (nbthread 1) vs nginx (1 worker) on this box.
# Installs what it needs from Debian, builds Portcullis (release), runs bench.py, writes RESULTS.md.
# Usage: bench/run.sh [--runs N] [--duration SECONDS] [--idle-connections N] [--proxies LIST]
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
pkgs=(haproxy nginx libnginx-mod-stream wrk nghttp2-client openssl python3)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages start system services on :80; the benchmark runs its own instances on
# its own ports (bench.py), so stopping the packaged services is enough. Other nginx/haproxy
# processes on the machine are left alone.
systemctl stop nginx haproxy >/dev/null 2>&1 || true

# wrk and h2load take the TLS server name from the URL, so the benchmark host names must
# resolve to loopback.
for h in app.bench.test pass.bench.test re.bench.test; do
  grep -q " $h\$" /etc/hosts || echo "127.0.0.1 $h" >> /etc/hosts
done

# Portcullis and the config-change/scale benchmarks (bench/scale.rs) in one build: the `bench`
# feature only adds the second binary.
cargo build --release --locked --features bench --bin portcullis --bin bench_scale
# The idle-connection test holds 8 000 TLS connections: client, proxy and backend each need one
# descriptor per connection (the hard limit on the project's machines is 20 000).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/bench.py --binary target/release/portcullis --scale-binary target/release/bench_scale "$@"
