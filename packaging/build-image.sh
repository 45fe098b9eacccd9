#!/usr/bin/env bash
# Builds the Portcullis image as one tar archive, without a Docker engine, from the static binary.
#
#   packaging/build-image.sh [--binary PATH] [--tag REF] [--output FILE]
#
#   --binary  the static binary (default: build it with packaging/build-static.sh)
#   --tag     the image reference (default: ghcr.io/portcullis/portcullis:<Chart.yaml appVersion>,
#             the chart's and manifests/' default image)
#   --output  the archive (default: target/portcullis-image.tar)
#
# The archive holds both layouts, as `docker save` does since Docker 25:
#   - manifest.json (+ blobs) for `docker load`, `podman load`, `kind load image-archive`,
#     `ctr import`, `skopeo ... docker-archive:FILE`;
#   - oci-layout + index.json (+ the same blobs) for `skopeo ... oci-archive:FILE`, `umoci`.
# Its image is what the Dockerfile's final stage makes: one layer with the binary at
# /usr/local/bin/portcullis (root-owned, 0555, nothing else: no shell, no libc, no CA bundle),
# and the config (USER 65532:65532, ENV, EXPOSE, ENTRYPOINT, CMD, LABELs) read from the
# Dockerfile by packaging/image-config.py, plus version/revision/created labels.
#
# Reproducible: file order, owners and times in both tars are fixed (times from
# $SOURCE_DATE_EPOCH, default 0), so the same binary and tag give a byte-identical archive
# (.ci/image.sh checks this). The layer is stored uncompressed (diff_id == digest, which every
# loader accepts); `skopeo copy` compresses it when pushing to a registry.
#
# Needs: GNU tar, sha256sum, python3. Prints the archive's path on its last line.
set -euo pipefail

# Paths given on the command line are relative to the caller's directory, not the checkout's.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
binary=""
tag=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$(absolute "$2")"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --output) output="$(absolute "$2")"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
output="${output:-${CARGO_TARGET_DIR:-target}/portcullis-image.tar}"

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/portcullis/Chart.yaml)"
[ -n "$app_version" ] || { echo "build-image: no appVersion in charts/portcullis/Chart.yaml" >&2; exit 1; }
tag="${tag:-ghcr.io/portcullis/portcullis:$app_version}"
# A full reference with a tag (no digest: the digest is the archive's own); the name is written
# into JSON as is, so it is held to the reference grammar's characters.
if ! [[ "$tag" =~ ^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] \
  || [[ "${tag##*:}" == */* ]]; then
  echo "build-image: --tag $tag is not NAME:TAG (lowercase name, e.g. registry.example.com/portcullis:0.1.0)" >&2
  exit 2
fi

if [ -z "$binary" ]; then
  binary="$(packaging/build-static.sh | tail -n 1)"
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable file" >&2; exit 1; }
# The Dockerfile's builder installs the binary here; the image must match it.
path_in_image=usr/local/bin/portcullis
grep -q "/out/$path_in_image" Dockerfile \
  || { echo "build-image: the Dockerfile no longer installs /$path_in_image; update this script" >&2; exit 1; }

epoch="${SOURCE_DATE_EPOCH:-0}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
labels=(--label "org.opencontainers.image.version=$version"
        --label "org.opencontainers.image.created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)")
if revision="$(git rev-parse HEAD 2>/dev/null)"; then
  labels+=(--label "org.opencontainers.image.revision=$revision")
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Fixed order, owners and times; no atime/ctime pax records. Directories are listed as entries
# so the layer does not depend on the loader creating parents.
det_tar() {
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "$@"
}
blob() { # FILE -> moves it to blobs/sha256/<digest>, prints the hex digest
  local hex
  hex="$(sha256sum "$1" | cut -d' ' -f1)"
  mv "$1" "$work/image/blobs/sha256/$hex"
  echo "$hex"
}
size() { stat -c %s "$work/image/blobs/sha256/$1"; }

mkdir -p "$work/rootfs/$(dirname "$path_in_image")" "$work/image/blobs/sha256"
install -m 0555 "$binary" "$work/rootfs/$path_in_image"
find "$work/rootfs" -type d -exec chmod 0755 {} +

det_tar -C "$work/rootfs" -cf "$work/layer.tar" usr
layer="$(blob "$work/layer.tar")"

python3 packaging/image-config.py --dockerfile Dockerfile --diff-id "sha256:$layer" \
  --created "$epoch" "${labels[@]}" >"$work/config.json"
config="$(blob "$work/config.json")"

printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
  '"config":{"mediaType":"application/vnd.oci.image.config.v1+json",' \
  "\"digest\":\"sha256:$config\",\"size\":$(size "$config")}," \
  '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar",' \
  "\"digest\":\"sha256:$layer\",\"size\":$(size "$layer")}]}" >"$work/manifest"
manifest="$(blob "$work/manifest")"

# org.opencontainers.image.ref.name carries the full reference (not only the tag, as Docker
# writes it): podman names an image loaded through oci-archive after it.
printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
  '"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
  "\"digest\":\"sha256:$manifest\",\"size\":$(size "$manifest")," \
  "\"annotations\":{\"io.containerd.image.name\":\"$tag\",\"org.opencontainers.image.ref.name\":\"$tag\"}," \
  '"platform":{"architecture":"amd64","os":"linux"}}]}' >"$work/image/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/image/oci-layout"
printf '%s' \
  "[{\"Config\":\"blobs/sha256/$config\",\"RepoTags\":[\"$tag\"]," \
  "\"Layers\":[\"blobs/sha256/$layer\"]}]" >"$work/image/manifest.json"

find "$work/image" -type d -exec chmod 0755 {} +
find "$work/image" -type f -exec chmod 0644 {} +
mkdir -p "$(dirname "$output")"
det_tar -C "$work/image" -cf "$output.partial" blobs index.json manifest.json oci-layout
mv "$output.partial" "$output"

echo "build-image: $tag (manifest sha256:$manifest, config sha256:$config, layer sha256:$layer)" >&2
echo "$output"
