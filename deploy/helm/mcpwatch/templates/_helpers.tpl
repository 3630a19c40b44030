{{/* The name of every object: the release's, with "mcpwatch" in it. */}}
{{- define "mcpwatch.fullname" -}}
{{- if contains "mcpwatch" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-mcpwatch" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mcpwatch.selectorLabels" -}}
app.kubernetes.io/name: mcpwatch
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mcpwatch.labels" -}}
{{ include "mcpwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
