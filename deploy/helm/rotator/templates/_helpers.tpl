{{/* Names, labels and the checks that refuse a configuration that cannot work. */}}

{{- define "rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rotator.fullname" -}}
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

{{- define "rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: daemon
{{- end }}

{{- define "rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rotator.configMapName" -}}
{{- default (printf "%s-config" (include "rotator.fullname" .)) .Values.config.existingConfigMap }}
{{- end }}

{{- define "rotator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Refuse what cannot work, at render time, with the fix in the message:
- a SQLite journal is one file on one volume: exactly one replica;
- an inline policy file must use a PostgreSQL journal when kind is postgresql;
- with kind sqlite, its journal must be a file on the PersistentVolumeClaim (/var/lib/rotator):
  anywhere else it is lost with the pod (runs, pending revocations), and the default
  (rotator-journal.db next to the policy file) is in the read-only /etc/rotator;
- a ServiceMonitor whose scrapes the chart's own NetworkPolicy blocks (no metricsFrom): RotatorDown
  would fire forever, unless networkPolicy.metricsAllowedElsewhere says another NetworkPolicy of the
  namespace admits the scraper (NetworkPolicies add up; the chart cannot see that one). Without the ServiceMonitor the metrics are scraped some way the chart cannot
  see, so prometheusRule alone is not refused;
- an inline policy file whose journal URL names the CA mount (/etc/postgresql-ca/) with neither
  journal.caSecret nor journal.caConfigMap: nothing is mounted there and every replica fails at start;
- an inline policy file whose [daemon] shutdown_timeout (default 20s) is not at least 10 s below
  terminationGracePeriodSeconds: after that deadline the daemon still closes the notifier (up to 1 s)
  and waits for a prune (up to 5 s), and a SIGKILL meanwhile cuts off a run it was allowed to finish
  or park.
The journal line is found by a pattern, not a TOML parser: `journal = "..."` or `'...'` under
[rotator], or the dotted key `rotator.journal = ...`; anything else is refused rather than guessed.
So is shutdown_timeout: `shutdown_timeout = "<duration>"` (or '...', or `daemon.shutdown_timeout`),
the durations rotator reads (<number><unit> parts, units s m h d w); any other line naming it is refused.
*/}}
{{- define "rotator.validate" -}}
{{- $kind := .Values.journal.kind }}
{{- if not (has $kind (list "postgresql" "sqlite")) }}
{{- fail (printf "journal.kind must be postgresql or sqlite, not %q" $kind) }}
{{- end }}
{{- if and (eq $kind "sqlite") (ne (int .Values.replicaCount) 1) }}
{{- fail "journal.kind=sqlite allows exactly 1 replica (replicaCount=1); use a PostgreSQL journal to run several" }}
{{- end }}
{{- if not .Values.config.existingConfigMap }}
{{- $policies := required "config.policies (the policy file) or config.existingConfigMap is required" .Values.config.policies }}
{{- $journalKey := `(?m)^[ \t]*(rotator[ \t]*\.[ \t]*)?journal[ \t]*=[ \t]*` }}
{{- if and (eq $kind "postgresql") (not (regexMatch (printf `%s["']postgres(ql)?://` $journalKey) $policies)) }}
{{- fail "journal.kind=postgresql but config.policies has no [rotator] journal = \"postgresql://...\": replicas must share one PostgreSQL journal (or set journal.kind=sqlite and replicaCount=1)" }}
{{- end }}
{{- if eq $kind "sqlite" }}
{{- $lines := regexFindAll (printf "%s.*$" $journalKey) $policies -1 }}
{{- if not $lines }}
{{- fail "journal.kind=sqlite but config.policies sets no [rotator] journal: the default, rotator-journal.db next to the policy file, is in the read-only /etc/rotator and the daemon would fail at every start. Set journal = \"/var/lib/rotator/journal.db\" under [rotator] (the PersistentVolumeClaim's mount)" }}
{{- end }}
{{- /* An absolute path or sqlite:/// URL under /var/lib/rotator/, no "..", one quoted string (no escapes). */}}
{{- $onVolume := `^[ \t]*(rotator[ \t]*\.[ \t]*)?journal[ \t]*=[ \t]*("(sqlite://)?/+var/lib/rotator/+[^"\\/][^"\\]*"|'(sqlite://)?/+var/lib/rotator/+[^'/][^']*')[ \t\r]*(#.*)?$` }}
{{- range $lines }}
{{- if or (not (regexMatch $onVolume .)) (regexMatch `/\.\.(/|["'])` .) }}
{{- fail "journal.kind=sqlite but config.policies' [rotator] journal is not a file on the PersistentVolumeClaim mounted at /var/lib/rotator/: anywhere else it is lost with the pod (runs, pending revocations) or not writable. Set journal = \"/var/lib/rotator/journal.db\" (an absolute path or sqlite:/// URL under /var/lib/rotator/), or use a postgresql:// journal with journal.kind=postgresql" }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or .Values.journal.caSecret .Values.journal.caConfigMap) }}
{{- range regexFindAll (printf "%s.*$" $journalKey) $policies -1 }}
{{- if regexMatch `(/|%2[fF])etc(/|%2[fF])+postgresql-ca` . }}
{{- fail "config.policies' [rotator] journal names the CA at /etc/postgresql-ca/, but neither journal.caSecret nor journal.caConfigMap is set, so nothing is mounted there and every replica would fail at start. Set journal.caSecret (or journal.caConfigMap) to the Secret (ConfigMap) holding the PostgreSQL server's CA under the key ca.crt, e.g. kubectl create secret generic rotator-postgresql-ca --from-file=ca.crt=... and journal.caSecret=rotator-postgresql-ca" }}
{{- end }}
{{- end }}
{{- end }}
{{- $shutdown := 20 }}
{{- $timeoutLine := `^[ \t]*(daemon[ \t]*\.[ \t]*)?shutdown_timeout[ \t]*=[ \t]*("[ \t]*([0-9]+[ \t]*[smhdw][ \t]*)+"|'[ \t]*([0-9]+[ \t]*[smhdw][ \t]*)+')[ \t\r]*(#.*)?$` }}
{{- range regexFindAll `(?m)^[^#\n]*shutdown_timeout.*$` $policies -1 }}
{{- if not (regexMatch $timeoutLine .) }}
{{- fail (printf "config.policies: cannot read [daemon] shutdown_timeout from %q, so the chart cannot check it against terminationGracePeriodSeconds. Write it as shutdown_timeout = \"20s\" (a quoted duration: s, m, h, d, w) on its own line under [daemon]" (trim .)) }}
{{- end }}
{{- $shutdown = 0 }}
{{- /* The quoted value only (a comment may hold numbers too); leading zeros off, or int64 reads octal. */}}
{{- range regexFindAll `[0-9]+[ \t]*[smhdw]` (regexFind `["'][^"']*["']` .) -1 }}
{{- $digits := regexReplaceAll `^0+` (regexFind `[0-9]+` .) "" | default "0" }}
{{- $number := int64 (ternary "999999999999" $digits (gt (len $digits) 12)) }}
{{- $unit := get (dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800) (regexFind `[smhdw]` .) }}
{{- $shutdown = add $shutdown (mul $number $unit) }}
{{- end }}
{{- end }}
{{- $grace := int64 .Values.terminationGracePeriodSeconds }}
{{- if ge (add $shutdown 10) $grace }}
{{- fail (printf "config.policies' [daemon] shutdown_timeout (%ds) is not at least 10 s below terminationGracePeriodSeconds (%d): after that deadline the daemon still closes its notifications and ends a journal prune (up to about 6 s), and the kubelet's SIGKILL would cut off a run it was allowed to finish or park. Raise terminationGracePeriodSeconds to at least %d, or lower shutdown_timeout to at most %ds" $shutdown $grace (add $shutdown 11) (sub $grace 11)) }}
{{- end }}
{{- end }}
{{- if and .Values.journal.caSecret .Values.journal.caConfigMap }}
{{- fail "set journal.caSecret or journal.caConfigMap, not both" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) (not .Values.networkPolicy.metricsAllowedElsewhere) }}
{{- fail "serviceMonitor.enabled=true but networkPolicy.metricsFrom is empty: the NetworkPolicy (networkPolicy.enabled, on by default) then admits nothing to the metrics port, so Prometheus can never scrape rotator and RotatorDown fires forever. Set networkPolicy.metricsFrom to the Prometheus pods, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}] for a Prometheus in namespace monitoring, or set networkPolicy.enabled=false; or, where another NetworkPolicy of the namespace already admits Prometheus (policies add up), set networkPolicy.metricsAllowedElsewhere=true" }}
{{- end }}
{{- end }}
