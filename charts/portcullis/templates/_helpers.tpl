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
# Diagnostics are published as Events on the Ingress they concern.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
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
