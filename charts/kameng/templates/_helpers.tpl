{{- define "kameng.labels" -}}
app.kubernetes.io/name: kameng
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- define "kameng.selector" -}}
app.kubernetes.io/name: kameng
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}
{{- define "kameng.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* HQ's ServiceAccount: the one subject of every HQ role (hq-*.yaml). */}}
{{- define "kameng.hqSubject" -}}
- kind: ServiceAccount
  name: {{ .Values.hqServiceAccount | quote }}
  namespace: {{ .Release.Namespace | quote }}
{{- end -}}
