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

{{/* Replicas of one component spread over nodes, unless .Values.affinity says otherwise:
a node drained or lost takes at most one of them (preferred: a one-node cluster still
schedules them all). Called with (dict "ctx" $ "component" "operator"). */}}
{{- define "kameng.affinity" -}}
{{- if .ctx.Values.affinity }}
{{- toYaml .ctx.Values.affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: kameng
            app.kubernetes.io/instance: {{ .ctx.Release.Name }}
            app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Voluntary disruptions (a node drain, a cluster upgrade) take one replica at a time
when there is more than one. */}}
{{- define "kameng.pdb" -}}
{{- if gt (int .replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: kameng-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels: {{- include "kameng.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: kameng
      app.kubernetes.io/instance: {{ .ctx.Release.Name }}
      app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}
