#!/usr/bin/env python3
"""Strict schema validation of rendered Kubernetes YAML, offline.

Built-in kinds are validated with kubernetes-validate's bundled schemas in strict mode
(`kubernetes-validate --strict -k VERSION`: unknown fields are errors). Unlike the CLI, a kind
with no bundled schema is an error here instead of a warning, except for the kinds of our own
CRD, which the bundled schemas cannot know: those are skipped by name (SKIP_KINDS) and instead
validated against the openAPIV3Schema in crds/ingressclassparams.yaml, with unknown fields
rejected as the API server's pruning would silently drop them.

usage: validate.py -k 1.33 FILE...   (run with the Python that has kubernetes-validate)
"""

import argparse
import copy
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils

REPO = pathlib.Path(__file__).resolve().parent.parent
# Kinds served by our CRD (not in kubernetes-validate's bundled schemas).
SKIP_KINDS = {("portcullis.io/v1alpha1", "IngressClassParams")}
CRD_FILE = REPO / "crds" / "ingressclassparams.yaml"


def closed(schema):
    """The schema with `additionalProperties: false` wherever properties are listed."""
    schema = copy.deepcopy(schema)
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for key, value in list(schema.items()):
            if key == "properties":
                schema[key] = {name: closed(s) for name, s in value.items()}
            elif isinstance(value, (dict, list)):
                schema[key] = closed(value)
    elif isinstance(schema, list):
        schema = [closed(s) for s in schema]
    return schema


def crd_validator():
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    schema = closed(version["schema"]["openAPIV3Schema"])
    # The API server adds apiVersion/kind/metadata to every custom resource's schema.
    schema["properties"].update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
    )
    return jsonschema.Draft4Validator(schema)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    custom = crd_validator()
    failures = checked = skipped = 0
    for name in args.files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(name).read_text()) if d]
        if not docs:
            print(f"ERROR {name}: no objects")
            failures += 1
        for doc in docs:
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if (doc.get("apiVersion"), doc.get("kind")) in SKIP_KINDS:
                skipped += 1
                errors = sorted(custom.iter_errors(doc), key=lambda e: list(e.path))
                for e in errors:
                    path = ".".join(str(p) for p in e.path)
                    print(f"ERROR {what} (against our CRD): {path}: {e.message}")
                failures += bool(errors)
                continue
            try:
                utils.validate(doc, args.kubernetes_version, strict=True)
                checked += 1
            except utils.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                print(f"ERROR {what}: {path}: {e.message}")
                failures += 1
            except utils.SchemaNotFoundError as e:
                print(f"ERROR {what}: {e.message}")
                failures += 1
    print(
        f"k8s {args.kubernetes_version}: {checked} objects valid (strict), "
        f"{skipped} {'/'.join(k for _, k in sorted(SKIP_KINDS))} checked against our CRD "
        f"instead of the bundled schemas, {failures} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
