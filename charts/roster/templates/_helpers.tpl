{{/* The name of every object the chart creates. */}}
{{- define "roster.fullname" -}}
{{- if contains "roster" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-roster" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "roster.selectorLabels" -}}
app.kubernetes.io/name: roster
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "roster.labels" -}}
{{ include "roster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: roster
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The rules the operator needs in every namespace it watches: exactly the verbs its code
uses (list and watch for the caches, get for fresh reads, create/patch/delete for what it
writes) — the e2e RBAC proof compares them with what the API server's audit log shows it
used, both ways. */}}
{{- define "roster.rules" -}}
- apiGroups: [roster.dev]
  resources: [users, oidcclients]
  verbs: [list, watch]
- apiGroups: [roster.dev]
  resources: [userinvites]
  verbs: [get, list, watch, create, patch]
- apiGroups: [roster.dev]
  resources: [mfaresets]
  verbs: [list, watch, delete]
- apiGroups: [roster.dev]
  resources: [passwordresets]
  verbs: [list, watch, create, delete]
- apiGroups: [roster.dev]
  resources: [users/status, userinvites/status, mfaresets/status, passwordresets/status, oidcclients/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
