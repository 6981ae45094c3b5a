#!/usr/bin/env bash
# Post the current Nagios (or Icinga 1.x) notification to the alert bridge as JSON.
# Usage (from a Nagios command): itsm-notify.sh service|host
# Every value comes from a NAGIOS_* environment macro (enable_environment_macros=1) and goes
# through `jq --arg`, so quotes, backslashes and newlines in plugin output and comments stay data.
# Field names are the ones adapters/sources/nagios.py reads (docs/sources.md).
set -euo pipefail

object=${1:?usage: itsm-notify.sh service|host}
url=${ITSM_URL:?set ITSM_URL, e.g. https://bridge.example.com/webhook/nagios-main}
auth_file=${ITSM_AUTH_FILE:-/etc/nagios/itsm-bridge.header}   # one line: Authorization: Bearer <token>

# Icinga 1.x exports ICINGA_* instead of NAGIOS_*.
m() { local name="NAGIOS_$1" alt="ICINGA_$1"; printf '%s' "${!name:-${!alt:-}}"; }

body=$(jq -n \
  --arg source nagios \
  --arg nagios_server "$(hostname -f 2>/dev/null || hostname)" \
  --arg object_type "$object" \
  --arg notification_type "$(m NOTIFICATIONTYPE)" \
  --arg notification_author "$(m NOTIFICATIONAUTHOR)" \
  --arg notification_comment "$(m NOTIFICATIONCOMMENT)" \
  --arg host_name "$(m HOSTNAME)" \
  --arg host_alias "$(m HOSTALIAS)" \
  --arg host_address "$(m HOSTADDRESS)" \
  --arg host_state "$(m HOSTSTATE)" \
  --arg host_state_id "$(m HOSTSTATEID)" \
  --arg host_output "$(m HOSTOUTPUT)" \
  --arg long_host_output "$(m LONGHOSTOUTPUT)" \
  --arg host_problem_id "$(m HOSTPROBLEMID)" \
  --arg last_host_problem_id "$(m LASTHOSTPROBLEMID)" \
  --arg host_last_state_change "$(m LASTHOSTSTATECHANGE)" \
  --arg host_groups "$(m HOSTGROUPNAMES)" \
  --arg service_desc "$( [ "$object" = service ] && m SERVICEDESC )" \
  --arg service_state "$(m SERVICESTATE)" \
  --arg service_state_id "$(m SERVICESTATEID)" \
  --arg service_output "$(m SERVICEOUTPUT)" \
  --arg long_service_output "$(m LONGSERVICEOUTPUT)" \
  --arg service_perfdata "$(m SERVICEPERFDATA)" \
  --arg service_problem_id "$(m SERVICEPROBLEMID)" \
  --arg last_service_problem_id "$(m LASTSERVICEPROBLEMID)" \
  --arg service_last_state_change "$(m LASTSERVICESTATECHANGE)" \
  --arg service_groups "$(m SERVICEGROUPNAMES)" \
  --arg notification_number "$( [ "$object" = service ] && m SERVICENOTIFICATIONNUMBER || m HOSTNOTIFICATIONNUMBER )" \
  --arg timet "$(m TIMET)" \
  '$ARGS.named')

# --fail: a 4xx/5xx exits non-zero, so Nagios logs the failed notification.
# --retry: curl retries timeouts, 429 and 5xx (the bridge answers 503 while Redis is away).
printf '%s' "$body" | curl -sS --fail --max-time 10 --retry 3 --retry-connrefused \
  -H 'Content-Type: application/json' -H "@$auth_file" --data-binary @- "$url"
