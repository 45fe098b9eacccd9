#!/usr/bin/env python3
"""Reads an image archive from packaging/build-image.sh back and checks it, independently of
skopeo and umoci (.ci/image.sh runs those too).

    check-image.py ARCHIVE --tag REF

Checks: every blob's sha256 is its name; the OCI chain (oci-layout, index.json -> manifest ->
config and layer) and the docker-load chain (manifest.json) name the same blobs and the tag;
digests and sizes agree; the config's diff_ids are the layer's; the layer holds exactly the
binary at the Dockerfile's path (and its parent directories), root-owned, 0555, with fixed
times; the config runs it (Entrypoint through PATH) as the non-root user 65532 with the
Dockerfile's ports; and the extracted binary runs `--version`, printing the image's version label.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

BINARY = "usr/local/bin/portcullis"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
PORTS = {"8080/tcp", "8443/tcp", "10254/tcp"}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()

    files = {}
    with tarfile.open(args.archive) as archive:
        for member in archive.getmembers():
            check(member.uid == 0 and member.gid == 0, f"{member.name}: owner {member.uid}:{member.gid}, not 0:0")
            if member.isfile():
                files[member.name] = archive.extractfile(member).read()
            elif not member.isdir():
                check(False, f"{member.name}: neither a file nor a directory")

    blobs = {}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            hex_digest = name.removeprefix("blobs/sha256/")
            check(hashlib.sha256(data).hexdigest() == hex_digest, f"{name}: content's sha256 is not its name")
            blobs[hex_digest] = data
    others = sorted(n for n in files if not n.startswith("blobs/"))
    check(others == ["index.json", "manifest.json", "oci-layout"], f"top-level files are {others}")

    def resolve(descriptor, media_type, what):
        digest = descriptor.get("digest", "")
        hex_digest = digest.removeprefix("sha256:")
        check(descriptor.get("mediaType") == media_type, f"{what}: mediaType {descriptor.get('mediaType')}")
        if not check(hex_digest in blobs, f"{what}: {digest} is not in blobs/"):
            sys.exit("\n".join(failures))
        check(descriptor.get("size") == len(blobs[hex_digest]), f"{what}: size {descriptor.get('size')} is not the blob's")
        return hex_digest

    check(json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}, "oci-layout")
    index = json.loads(files["index.json"])
    check(index.get("schemaVersion") == 2 and len(index.get("manifests", [])) == 1, "index.json: not one manifest")
    entry = index["manifests"][0]
    annotations = entry.get("annotations", {})
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        check(annotations.get(key) == args.tag, f"index.json: {key} is {annotations.get(key)!r}, not {args.tag}")
    check(entry.get("platform") == {"architecture": "amd64", "os": "linux"}, "index.json: platform")
    manifest = json.loads(blobs[resolve(entry, OCI_MANIFEST, "index.json manifest")])
    config_hex = resolve(manifest["config"], OCI_CONFIG, "manifest config")
    check(len(manifest.get("layers", [])) == 1, "manifest: not exactly one layer")
    layer_hex = resolve(manifest["layers"][0], OCI_LAYER, "manifest layer")

    docker = json.loads(files["manifest.json"])
    check(
        docker
        == [
            {
                "Config": f"blobs/sha256/{config_hex}",
                "RepoTags": [args.tag],
                "Layers": [f"blobs/sha256/{layer_hex}"],
            }
        ],
        f"manifest.json does not name the OCI manifest's blobs and {args.tag}: {docker}",
    )

    config = json.loads(blobs[config_hex])
    run = config.get("config", {})
    check(config.get("architecture") == "amd64" and config.get("os") == "linux", "config: platform")
    # Uncompressed layer: the diff_id is the layer's own digest.
    check(config.get("rootfs") == {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]}, "config: rootfs.diff_ids")
    check(run.get("User") == "65532:65532", f"config: User {run.get('User')!r}")
    check(set(run.get("ExposedPorts", {})) == PORTS, f"config: ExposedPorts {run.get('ExposedPorts')}")
    check(run.get("Entrypoint") == ["portcullis"], f"config: Entrypoint {run.get('Entrypoint')}")
    check((run.get("Cmd") or [None])[0] == "controller", f"config: Cmd {run.get('Cmd')}")
    labels = run.get("Labels", {})
    for label in ("title", "description", "licenses", "version", "created"):
        check(f"org.opencontainers.image.{label}" in labels, f"config: no org.opencontainers.image.{label} label")
    path = [p for e in run.get("Env", []) if e.startswith("PATH=") for p in e.removeprefix("PATH=").split(":")]
    check(f"/{os.path.dirname(BINARY)}" in path, f"config: PATH {path} does not find /{BINARY}")

    created = config.get("created")
    with tarfile.open(fileobj=io.BytesIO(blobs[layer_hex])) as layer:
        members = {m.name.rstrip("/"): m for m in layer.getmembers()}
        check(sorted(members) == ["usr", "usr/local", "usr/local/bin", BINARY], f"layer holds {sorted(members)}")
        mtimes = {m.mtime for m in members.values()}
        check(len(mtimes) == 1, f"layer: file times {mtimes} are not one fixed time")
        for member in members.values():
            check(member.uid == 0 and member.gid == 0, f"layer {member.name}: owner {member.uid}:{member.gid}")
        binary = members.get(BINARY)
        if check(binary is not None and binary.isfile(), f"layer: /{BINARY} is not a file"):
            check(binary.mode == 0o555, f"layer /{BINARY}: mode {oct(binary.mode)}, not 0o555")
            data = layer.extractfile(binary).read()
    check(created is not None, "config: no created time")

    if not failures:
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "portcullis")
            with open(exe, "wb") as f:
                f.write(data)
            os.chmod(exe, 0o555)
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
            expected = f"portcullis {labels.get('org.opencontainers.image.version')}"
            check(
                out.returncode == 0 and out.stdout.strip() == expected,
                f"/{BINARY} --version: exit {out.returncode}, printed {out.stdout.strip()!r}, not {expected!r}",
            )

    if failures:
        print("\n".join(f"check-image: {f}" for f in failures), file=sys.stderr)
        sys.exit(1)
    print(f"check-image: {args.archive}: {args.tag}, manifest sha256:{entry['digest'].removeprefix('sha256:')[:12]}…, "
          f"layer {len(blobs[layer_hex])} bytes, binary runs: {expected}")


if __name__ == "__main__":
    main()
