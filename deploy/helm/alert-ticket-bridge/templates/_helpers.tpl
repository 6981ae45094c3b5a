{{/* The chart's name, and the objects' name: the release's alone when it already contains the chart's
(release "alert-ticket-bridge" gives "alert-ticket-bridge", not "alert-ticket-bridge-alert-ticket-bridge"). */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What runs in the pods: the bridge alone, or Alertmanager with the bridge beside it. */}}
{{- define "bridge.component" -}}
{{- if eq .Values.mode "sidecar" }}alertmanager{{ else }}bridge{{ end -}}
{{- end -}}

{{- define "bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bridge.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bridge.selector" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "bridge.component" . }}
{{- end -}}

{{- define "bridge.secretName" -}}
{{- default (include "bridge.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* All mapping files: `mappings` then `extraMappings`. */}}
{{- define "bridge.mappingFiles" -}}
{{- toYaml (concat (default list .Values.mappings) (default list .Values.extraMappings)) -}}
{{- end -}}

{{/* Fail at template time, naming the value, rather than render a pod that crash-loops. */}}
{{- define "bridge.validate" -}}
{{- $files := fromYamlArray (include "bridge.mappingFiles" .) -}}
{{- if not $files -}}
{{- fail "mappings: at least one mapping file is required" -}}
{{- end -}}
{{- $names := list -}}
{{- range $files -}}
{{- $name := required "mappings, extraMappings: every file needs a name" .name -}}
{{- if has $name $names -}}
{{- fail (printf "mappings, extraMappings: %s is given twice (set `mappings` to replace the default file, `extraMappings` to add files)" $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- $_ := required (printf "mappings, extraMappings: %s has no content" $name) .content -}}
{{- end -}}
{{- if not $.Values.existingSecret -}}
{{- $credentials := default dict $.Values.credentials -}}
{{- if not (or $.Values.redisUrl (get $credentials "BRIDGE_REDIS_URL")) -}}
{{- fail "redisUrl is required (or credentials.BRIDGE_REDIS_URL, or an existingSecret that has BRIDGE_REDIS_URL)" -}}
{{- end -}}
{{- range $files -}}
{{- $file := .name -}}
{{- $text := regexReplaceAll "(?m)^\\s*#.*$" .content "" -}}
{{- range regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-)?" $text -1 -}}
{{- if not (hasSuffix ":-" .) -}}
{{- $var := trimPrefix "${" . -}}
{{- $_ := required (printf "credentials.%s is required: mapping %s uses ${%s} (or set existingSecret to a Secret that has it)" $var $file $var) (get $credentials $var) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $.Values.mode "sidecar" -}}
{{- $_ := required "credentials.ALERTMANAGER_TOKEN is required in sidecar mode: Alertmanager's bearer token for the bridge (or set existingSecret)" (get $credentials "ALERTMANAGER_TOKEN") -}}
{{- end -}}
{{- end -}}
{{- if not $.Values.allowUnauthenticated -}}
{{- $open := include "bridge.openSources" $ -}}
{{- if $open -}}
{{- fail (printf "these sources would take alerts without a secret: %s. The bridge listens on 0.0.0.0 in the pod, and there it refuses to start with a source that anyone who reaches the port could post to. Give each one its secret (e.g. credentials.ALERTMANAGER_TOKEN, or existingSecret), remove the sources you do not use, or set allowUnauthenticated: true (it passes --allow-unauthenticated) to accept that" $open) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The mapping files' sources that would take alerts without a secret (bridge serve --host 0.0.0.0
refuses to start with any, unless --allow-unauthenticated): no `secret` nor `secret_file`, an empty one,
or `${VAR:-}` with no credentials.VAR and no existingSecret (whose keys the chart cannot read; the bridge
names such a source when it refuses to start). "name (in file)", comma-separated; "" if none. A file
that is not YAML the chart can read is left to the bridge. */}}
{{- define "bridge.openSources" -}}
{{- $open := list -}}
{{- $credentials := default dict .Values.credentials -}}
{{- range fromYamlArray (include "bridge.mappingFiles" .) -}}
{{- $file := .name -}}
{{- $doc := fromYaml (toString .content) -}}
{{- if and (not (hasKey $doc "Error")) (kindIs "map" (get $doc "sources")) -}}
{{- range $name, $source := get $doc "sources" -}}
{{- if kindIs "map" $source -}}
{{- $secret := trim (toString (default "" (get $source "secret"))) -}}
{{- $given := or (get $source "secret_file") $secret -}}
{{- $fallback := regexFind "^\\$\\{[A-Za-z_][A-Za-z0-9_]*:-\\}$" $secret -}}
{{- if $fallback -}}
{{- $given = or $.Values.existingSecret (get $credentials (trimSuffix ":-}" (trimPrefix "${" $fallback))) -}}
{{- end -}}
{{- if not $given -}}
{{- $open = append $open (printf "%s (in %s)" $name $file) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- join ", " $open -}}
{{- end -}}

{{/* The bridge's container. Readiness: /readyz (Redis answers) standalone; /healthz (the process
accepts and answers webhooks) as a sidecar, so that Redis never makes the Alertmanager pod unready. */}}
{{- define "bridge.container" -}}
- name: bridge
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --host=0.0.0.0
    - --port=8080
    {{- if .Values.allowUnauthenticated }}
    - --allow-unauthenticated
    {{- end }}
    {{- range fromYamlArray (include "bridge.mappingFiles" .) }}
    - --config=/etc/bridge/mappings/{{ .name }}
    {{- end }}
  envFrom:
    - secretRef:
        name: {{ include "bridge.secretName" . }}
  env:
    - name: BRIDGE_SHUTDOWN_GRACE_S
      value: {{ .Values.shutdownGraceSeconds | quote }}
    {{- if .Values.redisUrl }}
    - name: BRIDGE_REDIS_URL
      value: {{ .Values.redisUrl | quote }}
    {{- end }}
    {{- if .Values.redisShards }}
    - name: BRIDGE_SHARDS
      value: {{ .Values.redisShards | quote }}
    {{- end }}
  ports:
    - name: bridge
      containerPort: 8080
  startupProbe:
    httpGet:
      path: /healthz
      port: bridge
    periodSeconds: 2
    failureThreshold: 30
  readinessProbe:
    httpGet:
      path: {{ if eq .Values.mode "sidecar" }}/healthz{{ else }}/readyz{{ end }}
      port: bridge
    periodSeconds: 10
  livenessProbe:
    httpGet:
      path: /healthz
      port: bridge
    periodSeconds: 20
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "5"]
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: mappings
      mountPath: /etc/bridge/mappings
      readOnly: true
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* Pod-level settings both modes share. */}}
{{- define "bridge.podAnnotations" -}}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- if eq .Values.mode "sidecar" }}
checksum/alertmanager-config: {{ toYaml .Values.alertmanager.config | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "bridge.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bridge.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
