#!/usr/bin/env python3
"""Writes the OCI image config of the Portcullis image from the Dockerfile's final stage.

packaging/build-image.sh builds the image without a Docker engine; reading USER, ENV, EXPOSE,
ENTRYPOINT, CMD and LABEL from the Dockerfile (rather than repeating them here) keeps the two
ways of building the image from drifting apart. Only the instructions the final stage uses are
understood; any other instruction in that stage is an error, so a new one cannot be silently
left out of the archive.

    image-config.py --dockerfile Dockerfile --diff-id sha256:... --created 0 \
        [--label key=value ...]   > config.json

The output is canonical (sorted keys, no whitespace), so the same inputs give the same digest.
"""

import argparse
import datetime
import json
import shlex
import sys

# The final stage's COPY lines are what build-image.sh reproduces with its own layer; FROM
# scratch is the only base it can build on.
HANDLED_ELSEWHERE = {"COPY"}


def logical_lines(text):
    """The Dockerfile's instructions: comments dropped, `\\` continuations joined."""
    lines, pending = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def final_stage(lines):
    """Instructions after the last FROM, which must be `FROM scratch`."""
    starts = [i for i, line in enumerate(lines) if line.split()[0].upper() == "FROM"]
    if not starts:
        sys.exit("image-config: the Dockerfile has no FROM")
    base = lines[starts[-1]].split()[1]
    if base != "scratch":
        sys.exit(f"image-config: the final stage is FROM {base}; only FROM scratch can be built without an engine")
    return lines[starts[-1] + 1 :]


def key_values(arg):
    """`k=v k2="v 2"` as in LABEL and ENV."""
    pairs = []
    for word in shlex.split(arg):
        key, sep, value = word.partition("=")
        if not sep:
            sys.exit(f"image-config: expected key=value, got {word!r}")
        pairs.append((key, value))
    return pairs


def exec_form(instruction, arg):
    value = json.loads(arg) if arg.startswith("[") else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        sys.exit(f"image-config: {instruction} must be in exec form (a JSON array of strings)")
    return value


def config_from(stage):
    config = {"Env": [], "ExposedPorts": {}, "Labels": {}}
    for line in stage:
        instruction, _, arg = line.partition(" ")
        instruction, arg = instruction.upper(), arg.strip()
        if instruction in HANDLED_ELSEWHERE:
            continue
        if instruction == "LABEL":
            config["Labels"].update(key_values(arg))
        elif instruction == "ENV":
            config["Env"].extend(f"{k}={v}" for k, v in key_values(arg))
        elif instruction == "USER":
            config["User"] = arg
        elif instruction == "EXPOSE":
            for port in arg.split():
                config["ExposedPorts"][port if "/" in port else f"{port}/tcp"] = {}
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = exec_form(instruction, arg)
        elif instruction == "CMD":
            config["Cmd"] = exec_form(instruction, arg)
        elif instruction == "WORKDIR":
            config["WorkingDir"] = arg
        else:
            sys.exit(f"image-config: {instruction} in the final stage is not understood; teach packaging/image-config.py")
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--diff-id", required=True, help="sha256:<hex> of the uncompressed layer")
    parser.add_argument("--created", type=int, required=True, help="seconds since the epoch")
    parser.add_argument("--label", action="append", default=[], help="extra key=value label")
    args = parser.parse_args()

    with open(args.dockerfile, encoding="utf-8") as f:
        config = config_from(final_stage(logical_lines(f.read())))
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep:
            sys.exit(f"image-config: --label wants key=value, got {label!r}")
        config["Labels"][key] = value

    created = datetime.datetime.fromtimestamp(args.created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    image = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [args.diff_id]},
        "history": [{"created": created, "created_by": "packaging/build-image.sh"}],
    }
    json.dump(image, sys.stdout, sort_keys=True, separators=(",", ":"))


if __name__ == "__main__":
    main()
