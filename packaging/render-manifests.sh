#!/usr/bin/env bash
# Renders manifests/portcullis.yaml: a Namespace, then the chart with default values (CRD
# included), for `kubectl apply -f manifests/` without Helm.
#
#   packaging/render-manifests.sh           rewrite manifests/portcullis.yaml
#   packaging/render-manifests.sh --check   fail if the committed file differs from a fresh render
#
# Uses $HELM, else `helm` on PATH (.ci/packaging.sh installs one).
set -euo pipefail
cd "$(dirname "$0")/.."

helm="${HELM:-helm}"
out=manifests/portcullis.yaml
namespace=portcullis

render() {
  cat <<YAML
# Portcullis, rendered from charts/portcullis with default values by
# packaging/render-manifests.sh. Do not edit: change the chart and re-run the script
# (CI fails when this file differs from the chart's render).
#
#   kubectl apply -f manifests/
---
apiVersion: v1
kind: Namespace
metadata:
  name: ${namespace}
  labels:
    # The controller's pod meets the "restricted" Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
YAML
  # Rendered for the oldest supported API server, so the pause before the drain is the
  # controller's --shutdown-delay (works everywhere) rather than the 1.30+ preStop sleep.
  "$helm" template portcullis charts/portcullis --namespace "$namespace" --include-crds \
    --kube-version 1.25.0
}

case "${1:-}" in
  --check)
    if ! diff -u "$out" <(render) >&2; then
      echo "error: $out differs from the chart's render; run packaging/render-manifests.sh and commit it" >&2
      exit 1
    fi
    echo "$out matches the chart's render"
    ;;
  "")
    mkdir -p "$(dirname "$out")"
    render >"$out"
    echo "wrote $out"
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
