{{- define "sidekey.name" -}}sidekey-injector{{- end -}}

{{- define "sidekey.labels" -}}
app.kubernetes.io/name: sidekey-injector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sidekey.selector" -}}
app.kubernetes.io/name: sidekey-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidekey.image" -}}
{{- if .digest -}}{{ .repository }}@{{ .digest }}{{- else -}}{{ .repository }}:{{ .tag }}{{- end -}}
{{- end -}}
