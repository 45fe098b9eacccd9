#!/usr/bin/env python3
"""Strict schema validation of rendered Kubernetes YAML, offline.

Built-in kinds are validated with kubernetes-validate's bundled schemas in strict mode
(`kubernetes-validate --strict -k VERSION`: unknown fields are errors). Unlike the CLI, a kind
with no bundled schema is an error here instead of a warning, except for the kinds of our own
CRD, which the bundled schemas cannot know: those are skipped by name (SKIP_KINDS) and instead
validated against the openAPIV3Schema in crds/ingressclassparams.yaml, with unknown fields
rejected as the API server's pruning would silently drop them. The prometheus-operator kinds
the chart can render (ServiceMonitor, PrometheusRule; MONITORING_KINDS) are not bundled either,
and their CRDs are not ours to vendor: they are checked against a small closed schema of our own
covering the fields the chart writes (a subset of prometheus-operator's monitoring.coreos.com/v1
API), and each rule's `expr` must parse as PromQL (promql-parser, the Rust parser's Python
binding). A ConfigMap holding a Grafana dashboard (a `*.json` key) must hold JSON whose panel
queries parse as PromQL, once Grafana's variables are given sample values.

usage: validate.py -k 1.33 FILE...   (run with the Python that has kubernetes-validate)
"""

import argparse
import copy
import pathlib
import sys

import json

import jsonschema
import promql_parser
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


NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "namespace"],
    "properties": {
        "name": NAME,
        "namespace": NAME,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                "lowercase", "uppercase", "keepequal", "dropequal",
                "Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop", "LabelKeep",
                "Lowercase", "Uppercase", "KeepEqual", "DropEqual",
            ]
        },
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}


def top(kind, spec):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


MONITORING_SCHEMAS = {
    "ServiceMonitor": top("ServiceMonitor", {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": NAME},
                },
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": RELABEL},
                        "metricRelabelings": {"type": "array", "items": RELABEL},
                    },
                },
            },
        },
    }),
    "PrometheusRule": top("PrometheusRule", {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                "properties": {
                                    "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                    "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                    "expr": {"type": ["string", "integer"], "minLength": 1},
                                    "for": DURATION,
                                    "keep_firing_for": DURATION,
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    }),
}
# Kinds of prometheus-operator's CRDs (not in the bundled schemas): MONITORING_SCHEMAS instead.
MONITORING_KINDS = {("monitoring.coreos.com/v1", kind) for kind in MONITORING_SCHEMAS}


def promql_error(expr):
    """Why `expr` is not PromQL, or None."""
    try:
        promql_parser.parse(expr)
    except ValueError as e:
        return str(e)
    return None


# Grafana's variables in the dashboard's queries, with values that make them PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*"}


def dashboard_errors(doc):
    """Errors of the Grafana dashboards (`*.json` keys) in a ConfigMap."""
    errors = []
    for key, text in (doc.get("data") or {}).items():
        if not key.endswith(".json"):
            continue
        try:
            dashboard = json.loads(text)
        except ValueError as e:
            errors.append(f"data.{key}: not JSON: {e}")
            continue
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                why = promql_error(expr)
                if why:
                    errors.append(f"data.{key}: panel {panel.get('title')!r}: {why}")
    return errors


def monitoring_errors(doc):
    """Errors of a ServiceMonitor or PrometheusRule against MONITORING_SCHEMAS."""
    validator = jsonschema.Draft7Validator(MONITORING_SCHEMAS[doc["kind"]])
    errors = [
        f"{'.'.join(str(p) for p in e.path)}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    ]
    if doc["kind"] == "PrometheusRule" and not errors:
        for g in doc["spec"]["groups"]:
            for r in g["rules"]:
                why = promql_error(str(r["expr"]))
                if why:
                    errors.append(f"{r.get('alert') or r.get('record')}: expr is not PromQL: {why}")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    custom = crd_validator()
    failures = checked = skipped = monitoring = 0
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
            if (doc.get("apiVersion"), doc.get("kind")) in MONITORING_KINDS:
                monitoring += 1
                errors = monitoring_errors(doc)
                for e in errors:
                    print(f"ERROR {what} (against our prometheus-operator subset): {e}")
                failures += bool(errors)
                continue
            if doc.get("kind") == "ConfigMap":
                errors = dashboard_errors(doc)
                for e in errors:
                    print(f"ERROR {what}: {e}")
                failures += bool(errors)
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
        f"instead of the bundled schemas, {monitoring} ServiceMonitor/PrometheusRule checked "
        f"against our own subset of their schema, {failures} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
