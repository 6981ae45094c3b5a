"""SolarWinds Orion / SolarWinds Platform "Send a GET or POST Request to a Web Server" alert actions.

Trigger and reset are separate actions with the same "Body to post" except `event_type`. Variables:
https://documentation.solarwinds.com/en/success_center/orionplatform/content/core-variable-construction-sw1109.htm;
AlertObjectID: https://github.com/solarwinds/OrionSDK, docs/alerts.md. SolarWinds pastes values
unescaped and leaves variables it cannot resolve as literal `${N=…}`, so the body is read leniently
and those remnants count as empty. JSON (the snippet in deploy/snippets/solarwinds/) and iLert-style
forms are both read; `fields` maps other names.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.sources import lenient
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, FollowUp, FollowUpKind, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter

SolarWindsField = Literal[
    "event_type", "reset", "alert_name", "alert_message", "alert_description", "alert_severity",
    "alert_def_id", "alert_object_id", "alert_active_id", "alert_details_url", "acknowledge_url",
    "acknowledged", "acknowledged_by", "object_type", "node_caption", "node_dns", "ip_address",
    "node_status", "node_details_url", "timestamp_utc", "time_of_alert", "orion_server",
]  # fmt: skip

# Folded key names per field: the snippet's snake_case, iLert's and Datadog's published templates.
_KEYS: Mapping[str, tuple[str, ...]] = {
    "event_type": ("eventtype", "ilerteventtype"),
    "reset": ("reset",),
    "alert_name": ("alertname",),
    "alert_message": ("alertmessage", "summary", "ilerteventsummary"),
    "alert_description": ("alertdescription", "description"),
    "alert_severity": ("alertseverity", "severity"),
    "alert_def_id": ("alertdefid", "alertid"),
    "alert_object_id": ("alertobjectid",),
    "alert_active_id": ("alertactiveid",),
    "alert_details_url": ("alertdetailsurl",),
    "acknowledge_url": ("acknowledgeurl",),
    "acknowledged": ("acknowledged",),
    "acknowledged_by": ("acknowledgedby",),
    "object_type": ("objecttype",),
    "node_caption": ("nodecaption", "host", "nodename", "caption"),
    "node_dns": ("nodedns", "dns"),
    "ip_address": ("ipaddress", "ip"),
    "node_status": ("nodestatus",),
    "node_details_url": ("nodedetailsurl", "hosturl"),
    "timestamp_utc": ("timestamputc", "timestamp"),
    "time_of_alert": ("timeofalert",),
    "orion_server": ("orionserver",),
}

# Orion.AlertConfigurations.Severity: 0 Information, 1 Warning, 2 Critical, 3 Serious, 4 Notice.
# The macro renders the name on most versions and the number on some, so both are read.
SEVERITIES: Mapping[str, Severity] = {
    "0": Severity.INFO,
    "information": Severity.INFO,
    "informational": Severity.INFO,
    "1": Severity.WARNING,
    "warning": Severity.WARNING,
    "2": Severity.CRITICAL,
    "critical": Severity.CRITICAL,
    "3": Severity.MAJOR,
    "serious": Severity.MAJOR,
    "4": Severity.INFO,
    "notice": Severity.INFO,
}
EVENT_TYPES: Mapping[str, Status] = {
    "TRIGGER": Status.FIRING,
    "TRIGGERED": Status.FIRING,
    "ALERT": Status.FIRING,
    "RESET": Status.RESOLVED,
    "RESOLVE": Status.RESOLVED,
    "RESOLVED": Status.RESOLVED,
    "CLEAR": Status.RESOLVED,
    "ACKNOWLEDGE": Status.ACKNOWLEDGED,
    "ACKNOWLEDGED": Status.ACKNOWLEDGED,
    "ACCEPT": Status.ACKNOWLEDGED,
}
_TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S")


class SolarWindsOptions(BaseModel):
    """Per-source settings for the solarwinds kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[SolarWindsField, str] = Field(default_factory=dict)  # field → your body's key
    severities: dict[str, Severity] = Field(default_factory=dict)  # severity name or number → severity

    @field_validator("severities")
    @classmethod
    def _lower(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {key.lower(): severity for key, severity in value.items()}


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(SolarWindsOptions, ctx.options, ctx.source)
    read = lenient.Record(
        lenient.load_record(body, content_type),
        _KEYS,
        overrides=opts.fields,
        placeholder=lenient.SOLARWINDS_VARIABLE,
    )

    name = read("alert_name")
    if not name:
        raise PayloadError("alert_name missing: add ${N=Alerting;M=AlertName} to the body")
    node = read("node_caption") or read("node_dns") or read("ip_address")
    identity = read("alert_object_id")
    if not identity and read("alert_def_id") and node:
        identity = f"{read('alert_def_id')}!{node}"  # Datadog's template has no AlertObjectID
    if not identity:
        raise PayloadError("alert_object_id missing: add ${N=Alerting;M=AlertObjectID} to the body")
    status, event = _status(read("event_type"), read("reset"))
    said = read("alert_severity").lower()
    at = _time(read("timestamp_utc"))
    labels = {
        "object_type": read("object_type"),
        "solarwinds_event": event,
        "node": node,
        "orion_server": read("orion_server"),
    }
    raw = {
        "alert_def_id": read("alert_def_id"),
        "alert_active_id": read("alert_active_id"),
        "acknowledged": read("acknowledged"),
        "acknowledged_by": read("acknowledged_by"),
        "ip_address": read("ip_address"),
        "node_status": read("node_status"),
        "time_of_alert": read("time_of_alert"),
    }
    links = [read("alert_details_url"), read("node_details_url"), read("acknowledge_url")]
    alert = Alert(
        source=ctx.source,
        kind="solarwinds",
        # AlertObjectID is one (alert definition, object) pair and survives reset and re-trigger;
        # AlertActiveID (one activation) is kept in raw.
        identity=identity,
        name=name,
        resource=node,
        severity=opts.severities.get(said) or SEVERITIES.get(said, Severity.WARNING),
        status=status,
        summary=read("alert_message") or (f"{name} on {node}" if node else name),
        description=read("alert_description"),
        labels={key: value for key, value in labels.items() if value},
        starts_at=at if status is Status.FIRING else None,  # an acknowledgement's time is not the problem's
        ends_at=at if status is Status.RESOLVED else None,
        links=[link for link in links if link.startswith(("http://", "https://"))],
        event=FollowUp(kind=FollowUpKind.ACKNOWLEDGEMENT, author=read("acknowledged_by"), at=at)
        if status is Status.ACKNOWLEDGED
        else None,
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value},
    )
    return Parsed(alerts=[alert])


def _status(event_type: str, reset: str) -> tuple[Status, str]:
    """Trigger → firing, reset → resolved; without an event type, Datadog's `reset: true` or firing."""
    said = event_type.upper()
    if not said:
        return (Status.RESOLVED, "reset") if reset.lower() in ("true", "yes", "1") else (Status.FIRING, "trigger")
    status = EVENT_TYPES.get(said)
    if status is None:
        raise PayloadError(f"event_type: unknown value {said[:40]!r}; expected TRIGGER or RESET")
    return status, {Status.FIRING: "trigger", Status.RESOLVED: "reset"}.get(status, "acknowledge")


def _time(value: str) -> datetime | None:
    """`${N=SWQL;M=SELECT GETUTCDATE() …}`: ISO-like on most servers, US or German format on others."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        for fmt in _TIME_FORMATS:
            try:
                at = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        else:
            raise PayloadError(f"timestamp_utc: {value[:40]!r} is not a date and time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def verify(body: bytes, headers: Mapping[str, str], query: Mapping[str, str], secret: str, now: datetime) -> None:
    """`Authorization: Bearer <secret>`, or `?token=<secret>` for SolarWinds versions whose HTTP
    action cannot set headers (integrators put the key in the URL, as Datadog's SolarWinds integration
    does: https://docs.datadoghq.com/integrations/solarwinds/)."""
    if not secret:
        raise AuthError("no secret is configured for this source")
    scheme, _, token = lenient.header(headers, "Authorization").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        token = query.get("token") or ""
    if not token.strip():
        raise AuthError("missing 'Authorization: Bearer <token>' header or ?token= in the URL")
    if not hmac.compare_digest(token.strip().encode("utf-8", errors="replace"), secret.encode()):
        raise AuthError("token does not match this source's secret")


ADAPTER = SourceAdapter(
    kind="solarwinds", parse=parse, content_types=lenient.TEMPLATE_TYPES, verify=verify, options=SolarWindsOptions
)
