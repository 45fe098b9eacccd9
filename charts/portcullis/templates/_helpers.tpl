{{/* Chart name, overridable. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object of the release. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels that select the controller pods (immutable on a Deployment: keep them stable). */}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: digest wins over tag; tag defaults to the appVersion. */}}
{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the IngressClassParams object. */}}
{{- define "portcullis.paramsName" -}}
{{- default .Values.ingressClass.name .Values.ingressClass.params.name }}
{{- end }}

{{/* Every certificate Secret to mount: list of {dir, secret}. */}}
{{- define "portcullis.certSecrets" -}}
{{- $out := list }}
{{- with .Values.defaultCertificate.secret }}
{{- $out = append $out (dict "dir" "default" "secret" .) }}
{{- end }}
{{- range .Values.extraCertificateSecrets }}
{{- $out = append $out (dict "dir" . "secret" .) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Checks of value combinations that cannot work; fail the render with a clear message. */}}
{{- define "portcullis.validate" -}}
{{- if not (has .Values.kind (list "Deployment" "DaemonSet")) }}
{{- fail (printf "kind must be Deployment or DaemonSet, not %q" .Values.kind) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (eq .Values.kind "DaemonSet") }}
{{- fail "autoscaling.enabled needs kind: Deployment (a DaemonSet runs one pod per node)" }}
{{- end }}
{{- if not (has .Values.service.type (list "LoadBalancer" "NodePort" "ClusterIP")) }}
{{- fail (printf "service.type must be LoadBalancer, NodePort or ClusterIP, not %q" .Values.service.type) }}
{{- end }}
{{- if not (has .Values.service.externalTrafficPolicy (list "Local" "Cluster")) }}
{{- fail (printf "service.externalTrafficPolicy must be Local or Cluster, not %q" .Values.service.externalTrafficPolicy) }}
{{- end }}
{{- if not (has .Values.controller.logFormat (list "json" "text")) }}
{{- fail (printf "controller.logFormat must be json or text, not %q" .Values.controller.logFormat) }}
{{- end }}
{{- if and .Values.hostNetwork .Values.hostPort.enabled (or (ne (int .Values.hostPort.http) (int .Values.containerPorts.http)) (ne (int .Values.hostPort.https) (int .Values.containerPorts.https))) }}
{{- fail "with hostNetwork, hostPort.http/https must equal containerPorts.http/https (the listeners bind the node's ports themselves)" }}
{{- end }}
{{- if has "default" .Values.extraCertificateSecrets }}
{{- fail "extraCertificateSecrets: \"default\" is the directory of defaultCertificate.secret; set defaultCertificate.secret instead" }}
{{- end }}
{{- end }}

{{/*
Rules for the namespaced kinds the controller reads and writes (src/cluster/rbac.rs API_ACCESS,
the entries scoped to the watched namespaces). Granted by the
ClusterRole, or, with watchNamespace, by a Role in the watched namespace.
*/}}
{{- define "portcullis.namespacedRules" -}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["list", "watch"]
# Status writes: the published address on our Ingresses.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["patch"]
# Diagnostics are published as Events on the object they concern (Ingress, Gateway, route, ...).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# Gateway API (the CRDs may be missing, see the GatewayClasses rule).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways", "httproutes", "grpcroutes", "tlsroutes", "backendtlspolicies", "referencegrants"]
  verbs: ["list", "watch"]
# Gateway status: ours alone, written whole.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways/status"]
  verbs: ["patch"]
# Route status: status.parents is shared with other controllers, so it is read first and
# patched with the resourceVersion it was read at (our entries replaced, theirs kept).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes/status", "grpcroutes/status", "tlsroutes/status"]
  verbs: ["get", "patch"]
# The CA bundles (ca.crt) that BackendTLSPolicies name.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch"]
{{ include "portcullis.serviceSecretRules" . }}
{{- end }}

{{/*
Services and Secrets: backends and their certificates in the watched namespaces, and in the
release namespace the chart's own Service (--publish-service, watched by name) and the default
certificate Secret (--default-certificate, watched by name). Only the TLS Secrets
(type=kubernetes.io/tls) and the Secrets labelled portcullis.io/backend-ca=true are watched,
but RBAC cannot restrict list/watch by selector.
*/}}
{{- define "portcullis.serviceSecretRules" -}}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
The controller's command-line flags: an ordered list of names and a dict of their values (true:
a flag without value), as JSON {"order": [...], "values": {...}, "rest": [...]}. Built as a dict
so that controller.extraArgs can replace a flag the chart sets: the binary (clap) refuses a
repeated flag. An extraArgs item `--name=value`, or `--name` followed by an item not starting
with `-`, sets `name`; `--name` alone sets it to true; anything else goes to "rest", appended.
An extraArgs --publish-status-address drops the chart's --publish-service, and the reverse.
Why the chart's flags:
- --lease-name: one Lease per release, so two installations never wait on each other's leader;
- --http-addr/--https-addr: unprivileged container ports, the Service maps 80/443 onto them;
- --public-http-port/--public-https-port: clients reach us on the Service's ports, which
  redirects and X-Forwarded-Port name;
- --admin-addr: all interfaces (the binary's default is 127.0.0.1), so kubelet can probe
  /healthz and /readyz; /metrics is then reachable from inside the cluster;
- --shutdown-grace: always explicit, as terminationGracePeriodSeconds is derived from it.
*/}}
{{- define "portcullis.flags" -}}
{{- $v := .Values }}
{{- $c := $v.controller }}
{{- $fullname := include "portcullis.fullname" . }}
{{- $order := list }}
{{- $values := dict }}
{{- $set := list
  (list "ingress-class" $v.ingressClass.name)
  (list "controller-class" $v.ingressClass.controller)
  (list "lease-name" ($c.leaseName | default (printf "%s-leader" $fullname)))
  (list "http-addr" (printf "%s:%v" $c.listenAddress $v.containerPorts.http))
  (list "https-addr" (printf "%s:%v" $c.listenAddress $v.containerPorts.https))
  (list "public-http-port" (toString $v.service.httpPort))
  (list "public-https-port" (toString $v.service.httpsPort))
  (list "admin-addr" (printf "%s:%v" $c.adminAddress $v.containerPorts.admin))
  (list "log-format" $c.logFormat)
  (list "shutdown-grace" $c.shutdownGrace)
}}
{{- if $c.watchNamespace }}
{{- $set = append $set (list "watch-namespace" $c.watchNamespace) }}
{{- end }}
{{- if $c.publishStatusAddress }}
{{- $set = append $set (list "publish-status-address" $c.publishStatusAddress) }}
{{- else if and $c.publishService $v.service.enabled }}
{{- $set = append $set (list "publish-service" (printf "%s/%s" .Release.Namespace $fullname)) }}
{{- end }}
{{- with $v.defaultCertificate.secret }}
{{- $set = append $set (list "default-certificate" (printf "%s/%s" $.Release.Namespace .)) }}
{{- end }}
{{- if include "portcullis.certSecrets" . | fromJsonArray }}
{{- $set = append $set (list "cert-dir" $c.certDir) }}
{{- end }}
{{- if $c.updateStatusOnShutdown }}
{{- $set = append $set (list "update-status-on-shutdown" true) }}
{{- end }}
{{- if and (gt (int $v.preStopSleepSeconds) 0) (not (include "portcullis.sleepAction" .)) }}
{{- $set = append $set (list "shutdown-delay" (printf "%ds" (int $v.preStopSleepSeconds))) }}
{{- end }}
{{- $rest := list }}
{{- $extra := $c.extraArgs }}
{{- $chartSet := len $set }}
{{- $skip := false }}
{{- range $i, $arg := $extra }}
{{- if $skip }}
{{- $skip = false }}
{{- else if hasPrefix "--" (toString $arg) }}
{{- $parts := splitn "=" 2 (trimPrefix "--" (toString $arg)) }}
{{- if contains "=" (toString $arg) }}
{{- $set = append $set (list $parts._0 $parts._1) }}
{{- else if and (lt (add1 $i) (len $extra)) (not (hasPrefix "-" (toString (index $extra (add1 $i))))) }}
{{- $set = append $set (list $parts._0 (toString (index $extra (add1 $i)))) }}
{{- $skip = true }}
{{- else }}
{{- $set = append $set (list $parts._0 true) }}
{{- end }}
{{- else }}
{{- $rest = append $rest (toString $arg) }}
{{- end }}
{{- end }}
{{- /* --publish-service and --publish-status-address are alternatives: one from extraArgs drops the chart's other. */}}
{{- $alternatives := dict "publish-service" "publish-status-address" "publish-status-address" "publish-service" }}
{{- $fromExtra := list }}
{{- range $i, $flag := $set }}
{{- if ge $i $chartSet }}
{{- $fromExtra = append $fromExtra (index $flag 0) }}
{{- end }}
{{- end }}
{{- range $i, $flag := $set }}
{{- $name := index $flag 0 }}
{{- $other := get $alternatives $name }}
{{- if not (and (lt $i $chartSet) $other (has $other $fromExtra)) }}
{{- if not (hasKey $values $name) }}
{{- $order = append $order $name }}
{{- end }}
{{- $_ := set $values $name (index $flag 1) }}
{{- end }}
{{- end }}
{{- toJson (dict "order" $order "values" $values "rest" $rest) }}
{{- end }}

{{/* The container's args: `controller` then the flags of portcullis.flags, as a JSON list. */}}
{{- define "portcullis.args" -}}
{{- $flags := include "portcullis.flags" . | fromJson }}
{{- $args := list "controller" }}
{{- range $flags.order }}
{{- $value := index $flags.values . }}
{{- if eq (toString $value) "true" }}
{{- $args = append $args (printf "--%s" .) }}
{{- else }}
{{- $args = append $args (printf "--%s=%s" . (toString $value)) }}
{{- end }}
{{- end }}
{{- toJson (concat $args $flags.rest) }}
{{- end }}

{{/*
Seconds of a --shutdown-grace value (the binary's syntax: digits then ms, s, m, h or nothing
for seconds), rounded up.
*/}}
{{- define "portcullis.durationSeconds" -}}
{{- $d := toString . | trim }}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)?$" $d) }}
{{- fail (printf "--shutdown-grace %q is not a duration like 30s, 500ms, 2m or 1h" $d) }}
{{- end }}
{{- $n := regexFind "^[0-9]+" $d | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $d "" }}
{{- if eq $unit "ms" }}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else if eq $unit "h" }}{{ mul $n 3600 }}
{{- else }}{{ $n }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the shutdown grace (whatever sets
--shutdown-grace, values or extraArgs), then a margin; a set value below that fails.
*/}}
{{- define "portcullis.terminationGracePeriodSeconds" -}}
{{- $flags := include "portcullis.flags" . | fromJson }}
{{- $grace := include "portcullis.durationSeconds" (index $flags.values "shutdown-grace") | int64 }}
{{- $needed := add (int64 .Values.preStopSleepSeconds) $grace (int64 .Values.terminationGraceMarginSeconds) }}
{{- $set := toString .Values.terminationGracePeriodSeconds }}
{{- if eq $set "" }}
{{- $needed }}
{{- else if lt (int64 .Values.terminationGracePeriodSeconds) (int64 .Values.preStopSleepSeconds | add $grace) }}
{{- fail (printf "terminationGracePeriodSeconds %s is shorter than preStopSleepSeconds + the shutdown grace (%d s): pods would be killed mid-drain; leave it empty to derive it" $set (add (int64 .Values.preStopSleepSeconds) $grace)) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
"true" when the cluster's kubelet has the preStop `sleep` action (Kubernetes 1.30+, where it is
on by default). Older clusters get the same pause from the controller itself:
--shutdown-delay keeps serving, not ready, for preStopSleepSeconds after SIGTERM.
*/}}
{{- define "portcullis.sleepAction" -}}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}true{{- end }}
{{- end }}
