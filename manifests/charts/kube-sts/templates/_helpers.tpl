{{/* Names. */}}
{{- define "kube-sts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- define "kube-sts.issuer" -}}{{ include "kube-sts.fullname" . }}-issuer{{- end -}}
{{- define "kube-sts.webhook" -}}{{ include "kube-sts.fullname" . }}-webhook{{- end -}}
{{- define "kube-sts.tlsSecret" -}}{{ default (printf "%s-tls" (include "kube-sts.fullname" .)) .Values.tls.secretName }}{{- end -}}

{{- define "kube-sts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: kube-sts
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "issuer") */}}
{{- define "kube-sts.selector" -}}
app.kubernetes.io/name: sts-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* An image: [image.registry/]repository, then @digest (which wins) or :tag (default: appVersion). */}}
{{- define "kube-sts.image" -}}
{{- $repo := .image.repository -}}
{{- with .root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The in-cluster base URL of the issuer. */}}
{{- define "kube-sts.issuerURL" -}}
{{- if .Values.issuer.url -}}
{{- trimSuffix "/" .Values.issuer.url -}}
{{- else -}}
{{- printf "https://%s.%s.svc" (include "kube-sts.issuer" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* iss of one endpoint: (dict "root" $ "ep" $endpoint) */}}
{{- define "kube-sts.iss" -}}
{{- if .ep.issuer.host -}}
{{- printf "https://%s%s" .ep.issuer.host .ep.path -}}
{{- else -}}
{{- printf "%s%s" (include "kube-sts.issuerURL" .root) .ep.path -}}
{{- end -}}
{{- end -}}

{{- define "kube-sts.keysSecret" -}}
{{- default (printf "%s-%s-keys" (include "kube-sts.fullname" .root) .ep.name) .ep.issuer.keypair.secret -}}
{{- end -}}

{{/* DNS names of the serving certificate. */}}
{{- define "kube-sts.dnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range $svc := list (include "kube-sts.webhook" .) (include "kube-sts.issuer" .) -}}
{{- $names = append $names (printf "%s.%s.svc" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- end -}}
{{- range .Values.sts.endpoints -}}
{{- if .issuer.host }}{{ $names = append $names .issuer.host }}{{ end -}}
{{- end -}}
{{- range .Values.tls.extraDNSNames }}{{ $names = append $names . }}{{ end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/* Environment that points client-go at the API server, when set. */}}
{{- define "kube-sts.apiEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.kubernetesAPI.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetesAPI.port }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Scheduling, priority and spread of one component: (dict "root" $ "component" "issuer" "v" .Values.issuer) */}}
{{- define "kube-sts.scheduling" -}}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .v.topologySpreadConstraints | nindent 2 }}
{{- else if .v.topologySpread }}
topologySpreadConstraints:
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "kube-sts.selector" (dict "root" $.root "component" $.component) | nindent 6 }}
{{- end }}
{{- end }}
{{- if .v.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end -}}

{{/*
The part every entry of the MutatingWebhookConfiguration shares: Pod
creates, the failure policy and timeout, reinvocation.
*/}}
{{- define "kube-sts.webhookRules" -}}
rules:
- apiGroups: [""]
  apiVersions: [v1]
  operations: [CREATE]
  resources: [pods]
  scope: Namespaced
matchPolicy: Equivalent
failurePolicy: {{ .Values.webhook.failurePolicy }}
sideEffects: None
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
# Containers added by later webhooks (Vault's injector) get /tokens too.
reinvocationPolicy: IfNeeded
{{- end }}
