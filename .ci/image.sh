#!/usr/bin/env bash
# Image CI: builds the image archive with packaging/build-image.sh (no Docker engine) from the
# static release binary and reads it back. Called from .ci/run after
# .ci/packaging.sh (which has built the binary, so build-static.sh is a no-op here); also
# runnable by hand.
#
#   .ci/image.sh            build (or reuse) the static binary with packaging/build-static.sh
#   .ci/image.sh BINARY     use this binary instead
#
#   1. twice, byte-identical: the archive is reproducible; its default tag is the image the
#      chart and manifests/ run;
#   2. packaging/check-image.py: digests, sizes, both layouts, config, layer contents, and the
#      binary from the layer runs `--version`;
#   3. Debian's skopeo reads it as docker-archive: (the `docker load` layout) and oci-archive:
#      (the OCI layout) with the same config, and copies it out of both (verifying every digest);
#      Debian's umoci unpacks the OCI layout into a runtime bundle whose process is the
#      Dockerfile's ENTRYPOINT + CMD as uid 65532;
#   4. with IMAGE_CHECK_LOADERS=1 (off in CI: two daemons' worth of packages and privileges a CI
#      container may not grant; steps 1-3 already read both layouts back), two of the loaders
#      the docs name load it under its tag: `podman load` (Debian podman, storage in a temporary
#      directory) and `ctr images import` (Debian containerd, a private daemon on a temporary
#      socket; this is what `kind load image-archive` runs on each node).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v jq >/dev/null || need+=(jq)
loaders="${IMAGE_CHECK_LOADERS:-0}"
if [ "$loaders" = 1 ]; then
  command -v podman >/dev/null || need+=(podman)
  command -v containerd >/dev/null || need+=(containerd)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }
out="$(mktemp -d)"
containerd_pid=""
cleanup() {
  if [ -n "$containerd_pid" ]; then kill "$containerd_pid" 2>/dev/null || true; wait "$containerd_pid" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT

if [ $# -gt 0 ]; then
  bin="$1"
else
  step "static release binary (packaging/build-static.sh)"
  bin="$(packaging/build-static.sh | tail -n 1)"
fi
step "packaging/build-image.sh, twice (the binary's file time differs): byte-identical archives"
packaging/build-image.sh --binary "$bin" --output "$out/a.tar" >/dev/null
cp "$bin" "$out/portcullis" && touch -d @1234567890 "$out/portcullis"
packaging/build-image.sh --binary "$out/portcullis" --output "$out/b.tar" >/dev/null
cmp "$out/a.tar" "$out/b.tar" || { echo "error: two builds of the image archive differ" >&2; exit 1; }
archive="$out/a.tar"
# The default tag is the image the chart and manifests/ run.
tag="$(tar -xOf "$archive" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]')"
grep -q "image: $tag\$" manifests/portcullis.yaml \
  || { echo "error: build-image.sh's default tag $tag is not the image of manifests/portcullis.yaml" >&2; exit 1; }

step "packaging/check-image.py: the default tag ($tag) and --tag"
python3 packaging/check-image.py "$archive" --tag "$tag"
packaging/build-image.sh --binary "$bin" --tag localhost:5000/portcullis:ci --output "$out/c.tar" >/dev/null
python3 packaging/check-image.py "$out/c.tar" --tag localhost:5000/portcullis:ci

step "skopeo $(skopeo --version | cut -d' ' -f3): docker-archive and oci-archive"
skopeo inspect "docker-archive:$archive"
skopeo inspect --config --raw "docker-archive:$archive" >"$out/docker-config.json"
skopeo inspect --config --raw "oci-archive:$archive:$tag" >"$out/oci-config.json"
cmp "$out/docker-config.json" "$out/oci-config.json" \
  || { echo "error: the docker-archive and oci-archive views have different configs" >&2; exit 1; }
[ "$(jq -c .config.Entrypoint "$out/oci-config.json")" = '["portcullis"]' ] \
  || { echo "error: the config's Entrypoint is not [\"portcullis\"]" >&2; exit 1; }
skopeo copy --quiet "docker-archive:$archive" "dir:$out/from-docker"
skopeo copy --quiet "oci-archive:$archive:$tag" "oci:$out/from-oci:$tag"

step "umoci $(umoci --version | cut -d' ' -f3): unpack the OCI layout"
mkdir "$out/layout"
tar -xf "$archive" -C "$out/layout"
umoci unpack --rootless --image "$out/layout:$tag" "$out/bundle" >/dev/null
args="$(jq -c .process.args "$out/bundle/config.json")"
user="$(jq -c .process.user "$out/bundle/config.json")"
echo "process: $args as $user"
[ "$(jq -r '.process.args[0]' "$out/bundle/config.json")" = portcullis ] \
  && [ "$(jq -r '.process.user.uid' "$out/bundle/config.json")" = 65532 ] \
  || { echo "error: umoci's bundle does not run portcullis as uid 65532" >&2; exit 1; }
"$out/bundle/rootfs/usr/local/bin/portcullis" --version

if [ "$loaders" != 1 ]; then
  step "image checks passed (podman load and ctr import skipped: IMAGE_CHECK_LOADERS=1 runs them)"
  exit 0
fi

step "podman $(podman --version | cut -d' ' -f3): podman load"
mkdir -p "$out/podman"
cat >"$out/podman/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$out/podman/run"
graphroot = "$out/podman/graph"
EOF
export CONTAINERS_STORAGE_CONF="$out/podman/storage.conf"
podman load --quiet -i "$archive"
[ "$(podman image inspect --format '{{.Config.User}} {{.Config.Entrypoint}}' "$tag")" = "65532:65532 [portcullis]" ] \
  || { echo "error: podman did not load $tag with its User and Entrypoint" >&2; exit 1; }
podman rmi --force "$tag" >/dev/null

step "containerd $(containerd --version | cut -d' ' -f3): ctr images import"
mkdir -p "$out/containerd"
cat >"$out/containerd/config.toml" <<EOF
version = 2
root = "$out/containerd/root"
state = "$out/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$out/containerd/containerd.sock"
EOF
containerd --config "$out/containerd/config.toml" >"$out/containerd/log" 2>&1 &
containerd_pid=$!
ctr=(ctr --address "$out/containerd/containerd.sock" --namespace k8s.io)
for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${ctr[@]}" version >/dev/null || { cat "$out/containerd/log" >&2; echo "error: containerd did not start" >&2; exit 1; }
# The native snapshotter unpacks without overlayfs, which a CI container may not offer.
"${ctr[@]}" images import --snapshotter native "$archive"
"${ctr[@]}" images ls --quiet | grep -qx "$tag" \
  || { echo "error: ctr import did not name the image $tag" >&2; exit 1; }

step "image checks passed"
