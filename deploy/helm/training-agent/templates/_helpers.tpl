{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "training-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "training-agent.fullname" -}}
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

{{- define "training-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "training-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "training-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "training-agent.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "training-agent.runNamespace" -}}
{{- default .Release.Namespace .Values.runNamespace }}
{{- end }}

{{- define "training-agent.apiServiceAccount" -}}
{{- printf "%s-api" (include "training-agent.fullname" .) }}
{{- end }}

{{- define "training-agent.controllerServiceAccount" -}}
{{- printf "%s-controller" (include "training-agent.fullname" .) }}
{{- end }}

{{- define "training-agent.trainerServiceAccount" -}}
{{- printf "%s-trainer" (include "training-agent.fullname" .) }}
{{- end }}

{{- define "training-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "training-agent.trainerImage" -}}
{{- printf "%s:%s" .Values.trainer.image.repository (default .Chart.AppVersion .Values.trainer.image.tag) }}
{{- end }}

{{/* Environment of the API and the controller: settings from the ConfigMap, Supabase from its Secret (keys
SUPABASE_URL and SUPABASE_KEY; the trainer Jobs use it the same way) and the GCS key (the API reads datasets,
the controller removes the checkpoints of runs it reaps). Only the API (withMcpToken) gets the MCP token; both
get the callbacks' signing key (the API checks a start's callback_url, both send reports).
Include with (dict "root" $ "withMcpToken" true). */}}
{{- define "training-agent.controlPlaneEnv" -}}
{{- $v := .root.Values -}}
envFrom:
  - configMapRef:
      name: {{ include "training-agent.fullname" .root }}-config
  - secretRef:
      name: {{ $v.supabase.existingSecret }}
{{- if or (and .withMcpToken $v.mcpAuth.existingSecret) $v.gcs.existingSecret $v.callbacks.existingSecret }}
env:
  {{- if and .withMcpToken $v.mcpAuth.existingSecret }}
  - name: MCP_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ $v.mcpAuth.existingSecret }}
        key: {{ $v.mcpAuth.secretKey }}
  {{- end }}
  {{- if $v.gcs.existingSecret }}
  - name: GOOGLE_APPLICATION_CREDENTIALS
    value: /var/secrets/gcs/key.json
  {{- end }}
  {{- if $v.callbacks.existingSecret }}
  - name: TRAINING_AGENT_CALLBACK_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ $v.callbacks.existingSecret }}
        key: {{ $v.callbacks.secretKey }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Writable /tmp (the root filesystem is read-only) and the GCS key. Include with (dict "root" $). */}}
{{- define "training-agent.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .root.Values.gcs.existingSecret }}
  - name: gcs-key
    mountPath: /var/secrets/gcs
    readOnly: true
  {{- end }}
{{- end }}

{{- define "training-agent.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
  {{- if .root.Values.gcs.existingSecret }}
  - name: gcs-key
    secret:
      secretName: {{ .root.Values.gcs.existingSecret }}
  {{- end }}
{{- end }}

{{/* Scheduling and image-pull settings common to both Deployments: include with (dict "root" $ "pod" .Values.api). */}}
{{- define "training-agent.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Where the bucket is: the same for the control plane and the trainers. */}}
{{- define "training-agent.storageEnv" -}}
{{- with .Values.gcs.bucket }}
GCP_BUCKET_NAME: {{ . | quote }}
{{- end }}
{{- with .Values.gcs.project }}
TRAINING_AGENT_GCP_PROJECT: {{ . | quote }}
{{- end }}
{{- with include "training-agent.storageEmulatorHost" . }}
STORAGE_EMULATOR_HOST: {{ . | quote }}
{{- end }}
{{- end }}

{{/* gcs.emulatorHost, or the dev stack's fake-gcs-server when that is enabled. */}}
{{- define "training-agent.storageEmulatorHost" -}}
{{- if .Values.gcs.emulatorHost }}
{{- .Values.gcs.emulatorHost }}
{{- else if .Values.devStack.enabled }}
{{- printf "http://%s-fake-gcs.%s.svc:4443" (include "training-agent.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}
