{{/* The chart's name, shortened to what a label allows. */}}
{{- define "metricops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name every object of the release is called by (and the Lease's). */}}
{{- define "metricops.fullname" -}}
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

{{- define "metricops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metricops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metricops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "metricops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: metricops
{{- end }}

{{- define "metricops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "metricops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metricops.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* TLS is on when the admission webhook is: the API server calls it over HTTPS only. */}}
{{- define "metricops.tls" -}}
{{- if .Values.admissionWebhook.enabled }}true{{- end }}
{{- end }}

{{/* Where the serving certificate comes from: certManager, secret or helm ("auto" resolved). */}}
{{- define "metricops.tlsSource" -}}
{{- $s := .Values.admissionWebhook.tls.source }}
{{- if eq $s "auto" }}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate" }}certManager{{- else }}helm{{- end }}
{{- else }}{{ $s }}{{- end }}
{{- end }}

{{- define "metricops.tlsSecretName" -}}
{{- if eq (include "metricops.tlsSource" .) "secret" }}
{{- required "admissionWebhook.tls.secretName: name the kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) when admissionWebhook.tls.source is secret" .Values.admissionWebhook.tls.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "metricops.fullname" .) }}
{{- end }}
{{- end }}

{{- define "metricops.port" -}}
{{- if include "metricops.tls" . }}{{ .Values.service.httpsPort }}{{- else }}{{ .Values.service.httpPort }}{{- end }}
{{- end }}

{{- define "metricops.portName" -}}
{{- if include "metricops.tls" . }}https{{- else }}http{{- end }}
{{- end }}

{{/* The DNS names the API server and Alertmanager reach the Service by. */}}
{{- define "metricops.serviceHost" -}}
{{- printf "%s.%s.svc" (include "metricops.fullname" .) .Release.Namespace }}
{{- end }}

{{/* metricops.yaml: the user's config with the keys this chart owns set over it. */}}
{{- define "metricops.config" -}}
{{- $owned := dict "state_dir" "/var/lib/metricops" }}
{{- $cluster := dict "lease" (include "metricops.fullname" .) }}
{{- $_ := set $owned "cluster" $cluster }}
{{- if include "metricops.tls" . }}
{{- $_ := set $owned "server" (dict "tls" (dict "cert_file" "/etc/metricops/tls/tls.crt" "key_file" "/etc/metricops/tls/tls.key")) }}
{{- end }}
{{- $config := mustMergeOverwrite (deepCopy .Values.config) $owned }}
{{- toYaml $config }}
{{- end }}
