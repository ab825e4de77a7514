{{/* The chart's name, or nameOverride. */}}
{{- define "dth-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: fullnameOverride, else <release>-<chart> (the release name alone when it holds the chart's name). */}}
{{- define "dth-operator.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) also carry the namespace: releases of the same name in two namespaces must not share them. */}}
{{- define "dth-operator.clusterName" -}}
{{- printf "%s-%s" (include "dth-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dth-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dth-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dth-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dth-operator.labels" -}}
helm.sh/chart: {{ include "dth-operator.chart" . }}
{{ include "dth-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "dth-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dth-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces watched in namespaced mode, as a list: watch.namespaces, else the release's namespace. */}}
{{- define "dth-operator.namespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "dth-operator.clusterWide" -}}
{{- if eq .Values.watch.mode "clusterWide" }}true{{- end }}
{{- end }}

{{- define "dth-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dth-operator.engineImage" -}}
{{- printf "%s:%s" .Values.plugin.engineImage.repository (default .Chart.AppVersion .Values.plugin.engineImage.tag) }}
{{- end }}

{{/* Refuses value combinations that would install an operator that cannot work. */}}
{{- define "dth-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled: standalone replicas would all reconcile the same tasks" }}
{{- end }}
{{- if and .Values.aws.roleArn .Values.aws.credentialsSecret.name }}
{{- fail "set either aws.roleArn (IRSA) or aws.credentialsSecret.name, not both: the Secret's keys would silently take precedence over the role" }}
{{- end }}
{{- if and .Values.watch.namespaces (eq .Values.watch.mode "clusterWide") }}
{{- fail "watch.namespaces is for watch.mode namespaced; clusterWide watches every namespace" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (eq (int .Values.metrics.port) 0) }}
{{- fail "serviceMonitor.enabled needs metrics: metrics.port is 0" }}
{{- end }}
{{- end }}

{{/* The tenant policy file's content (dth_operator/policy.py reads it). */}}
{{- define "dth-operator.tenantPolicy" -}}
{{- toYaml (dict "rules" .Values.tenancy.rules) }}
{{- end }}

{{/* The web console's objects: <fullname>-console. Its pods carry their own app.kubernetes.io/name, so that the
operator's selector (name and instance) never matches them. */}}
{{- define "dth-operator.consoleName" -}}
{{- printf "%s-console" (include "dth-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dth-operator.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-console" (include "dth-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dth-operator.consoleLabels" -}}
helm.sh/chart: {{ include "dth-operator.chart" . }}
{{ include "dth-operator.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: console
{{- end }}

{{- define "dth-operator.consoleServiceAccountName" -}}
{{- if .Values.console.serviceAccount.create }}
{{- default (include "dth-operator.consoleName" .) .Values.console.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.console.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The console's image: console.image, else the operator's (both images hold the dth CLI). */}}
{{- define "dth-operator.consoleImage" -}}
{{- if .Values.console.image.repository }}
{{- printf "%s:%s" .Values.console.image.repository (default .Chart.AppVersion .Values.console.image.tag) }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default (default .Chart.AppVersion .Values.image.tag) .Values.console.image.tag) }}
{{- end }}
{{- end }}

{{/* Refuses a console that could not sign anyone in. */}}
{{- define "dth-operator.validateConsole" -}}
{{- if .Values.console.enabled }}
{{- range $value := list "issuer" "clientId" "existingSecret" }}
{{- if not (index $.Values.console.oidc $value) }}
{{- fail (printf "console.enabled needs console.oidc.%s: the console signs users in with OpenID Connect" $value) }}
{{- end }}
{{- end }}
{{- if not .Values.console.publicUrl }}
{{- fail "console.enabled needs console.publicUrl: the address users open, where the OIDC provider sends them back" }}
{{- end }}
{{- if and .Values.console.ingress.enabled (not .Values.console.ingress.host) }}
{{- fail "console.ingress.enabled needs console.ingress.host" }}
{{- end }}
{{- end }}
{{- end }}
