# Datadog -> alert bridge: a Webhooks integration entry (docs/sources.md, kind: datadog).
# https://docs.datadoghq.com/integrations/webhooks/ ; Terraform: datadog_webhook.
# The payload is payload.json (same directory): the documented $VARIABLES the bridge reads.
# Mention @webhook-itsm-bridge in every monitor message that should raise tickets.
#
# Bridge side (mapping):
#   sources:
#     datadog:
#       kind: datadog
#       secret: ${DATADOG_BRIDGE_TOKEN}      # the bearer token below
#
# Without Terraform: Integrations -> Webhooks -> New, name itsm-bridge, the URL below, "Use custom
# payload" with the content of payload.json, and Custom Headers {"Authorization": "Bearer <token>"}.

variable "itsm_bridge_token" {
  type      = string
  sensitive = true
}

resource "datadog_webhook" "itsm_bridge" {
  name      = "itsm-bridge"
  url       = "https://bridge.example.com/webhook/datadog"
  encode_as = "json"
  payload   = file("${path.module}/payload.json")
  custom_headers = jsonencode({
    Authorization = "Bearer ${var.itsm_bridge_token}"
  })
}
