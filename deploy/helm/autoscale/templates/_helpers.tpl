{{/* The chart's name. */}}
{{- define "autoscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The objects' name: <release>-operator when the release's name contains the chart's (a release
named `autoscale` gives `autoscale-operator`, the names of deploy/base), else
<release>-<chart>-operator.
*/}}
{{- define "autoscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "autoscale.name" .) .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s-operator" .Release.Name (include "autoscale.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "autoscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autoscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "autoscale.labels" -}}
{{ include "autoscale.selectorLabels" . }}
app.kubernetes.io/part-of: autoscale
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "autoscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "autoscale.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "autoscale.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "autoscale.leaseName" -}}
{{- default (include "autoscale.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Namespaces where the namespaced rules are bound (watchNamespaces mode): the watched ones
and the release's own, without duplicates. */}}
{{- define "autoscale.boundNamespaces" -}}
{{- $all := append (.Values.watchNamespaces | default list) .Release.Namespace -}}
{{- toJson (uniq $all) -}}
{{- end -}}

{{/* Namespaces where Secrets may be read, or "[]" for everywhere (a ClusterRoleBinding). */}}
{{- define "autoscale.secretNamespaces" -}}
{{- if .Values.rbac.secretNamespaces -}}
{{- toJson (uniq (append .Values.rbac.secretNamespaces .Release.Namespace)) -}}
{{- else if .Values.watchNamespaces -}}
{{- include "autoscale.boundNamespaces" . -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}
