#!/usr/bin/env bash
# Post the current Icinga 2 notification to the alert bridge as JSON (see itsm-bridge.conf).
# Values come from the NotificationCommand's `env` and go through `jq --arg`, so quotes,
# backslashes and newlines in output and comments stay data. Field names are the ones
# adapters/sources/nagios.py reads for kind icinga2 (docs/sources.md).
set -euo pipefail

: "${ITSM_URL:?ITSM_URL is not set (vars.itsm_url)}" "${ITSM_TOKEN:?ITSM_TOKEN is not set (vars.itsm_token)}"
object=${OBJECT_TYPE:-service}
v() { printf '%s' "${!1:-}"; }

body=$(jq -n \
  --arg source icinga2 \
  --arg icinga_instance "$(hostname -f 2>/dev/null || hostname)" \
  --arg object_type "$object" \
  --arg notification_type "$(v NOTIFICATIONTYPE)" \
  --arg notification_author "$(v NOTIFICATIONAUTHOR)" \
  --arg notification_comment "$(v NOTIFICATIONCOMMENT)" \
  --arg host_name "$(v HOSTNAME)" \
  --arg host_display_name "$(v HOSTDISPLAYNAME)" \
  --arg host_address "$(v HOSTADDRESS)" \
  --arg host_state "$(v HOSTSTATE)" \
  --arg host_state_id "$(v HOSTSTATEID)" \
  --arg host_output "$(v HOSTOUTPUT)" \
  --arg host_last_hard_state_change "$(v HOSTLASTHARDSTATECHANGE)" \
  --arg service_name "$( [ "$object" = service ] && v SERVICENAME )" \
  --arg service_display_name "$(v SERVICEDISPLAYNAME)" \
  --arg service_state "$(v SERVICESTATE)" \
  --arg service_state_id "$(v SERVICESTATEID)" \
  --arg service_output "$(v SERVICEOUTPUT)" \
  --arg service_perfdata "$(v SERVICEPERFDATA)" \
  --arg service_last_hard_state_change "$(v SERVICELASTHARDSTATECHANGE)" \
  --arg timet "$(v TIMET)" \
  --arg icingaweb2_url "$(v ICINGAWEB2URL)" \
  '$ARGS.named')

# The token goes to curl through a file descriptor, not the command line (ps shows arguments).
# --fail: a 4xx/5xx exits non-zero and Icinga logs it; --retry covers timeouts, 429 and 5xx.
printf '%s' "$body" | curl -sS --fail --max-time 10 --retry 3 --retry-connrefused \
  -H 'Content-Type: application/json' \
  -H @<(printf 'Authorization: Bearer %s\n' "$ITSM_TOKEN") \
  --data-binary @- "$ITSM_URL"
