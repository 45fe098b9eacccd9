#!/usr/bin/env python3
"""Writes the values table of charts/portcullis/README.md from the `# --` comments in values.yaml.

A comment block starting with `# --` documents the key on the line after it; lines after the
`# --` line continue it. The table goes between the README's `<!-- values:begin -->` and
`<!-- values:end -->` markers.

usage: chart-readme.py [--check]   (--check: fail if README.md is out of date)
"""

import json
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "portcullis"
BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")


def documented(text):
    """(dotted key, description) in file order."""
    rows, stack, doc = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if doc is not None:
                doc.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, m.group(2))]
        if doc is not None:
            rows.append((".".join(k for _, k in stack), " ".join(d for d in doc if d)))
            doc = None
    return rows


def default(values, dotted):
    v = values
    for k in dotted.split("."):
        v = v[k]
    return json.dumps(v, separators=(",", ":"))


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, doc in documented(text):
        value = default(values, key).replace("|", "\\|")
        doc = doc.replace("|", "\\|")
        lines.append(f"| `{key}` | `{value}` | {doc} |")
    return "\n".join(lines)


def main():
    readme = CHART / "README.md"
    old = readme.read_text()
    head, rest = old.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    if "--check" in sys.argv[1:]:
        if new != old:
            print(f"error: {readme} is out of date; run packaging/chart-readme.py", file=sys.stderr)
            return 1
        print(f"{readme.name} values table is up to date")
        return 0
    readme.write_text(new)
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
