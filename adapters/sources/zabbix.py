"""Zabbix webhook media type whose script posts its parameters as they are: one alert per request.

Parameters and macros:
https://www.zabbix.com/documentation/current/en/manual/config/notifications/media/webhook and "Macros
supported by location"; the problem/update/recovery logic follows Zabbix's own PagerDuty media script
(https://github.com/zabbix/zabbix, templates/media/pagerduty/media_pagerduty.yaml). Everything arrives as
a string, and a macro Zabbix could not resolve stays as its literal text (`{EVENT.RECOVERY.ID}` in a
problem notification): such remnants count as empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.sources import lenient
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, FollowUp, FollowUpKind, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter
from bridge.core.sync import MARKER

ZabbixField = Literal[
    "event_id", "event_value", "event_status", "event_update_status", "event_update_action",
    "event_update_message", "event_update_user", "event_ack_status", "event_recovery_id",
    "event_recovery_date", "event_recovery_time", "event_severity", "event_nseverity", "event_name",
    "event_date", "event_time", "event_opdata", "event_tags", "event_tagsjson", "event_source",
    "host_name", "host_host", "host_ip", "trigger_id", "trigger_url", "zabbix_url", "alert_subject",
    "alert_message",
]  # fmt: skip

# Folded names per field: the parameter names of deploy/snippets/zabbix/ and of Zabbix's own media
# types (eventid, eventvalue, eventupdate, eventack, hostname, triggerid, url, severity ...).
_KEYS: Mapping[str, tuple[str, ...]] = {
    "event_id": ("eventid",),
    "event_value": ("eventvalue",),
    "event_status": ("eventstatus",),
    "event_update_status": ("eventupdatestatus", "eventupdate"),
    "event_update_action": ("eventupdateaction",),
    "event_update_message": ("eventupdatemessage",),
    "event_update_user": ("eventupdateuser", "userfullname"),
    "event_ack_status": ("eventackstatus", "eventack"),
    "event_recovery_id": ("eventrecoveryid",),
    "event_recovery_date": ("eventrecoverydate",),
    "event_recovery_time": ("eventrecoverytime",),
    "event_severity": ("eventseverity",),
    "event_nseverity": ("eventnseverity", "severity"),
    "event_name": ("eventname",),
    "event_date": ("eventdate",),
    "event_time": ("eventtime",),
    "event_opdata": ("eventopdata", "triggeropdata"),
    "event_tags": ("eventtags",),
    "event_tagsjson": ("eventtagsjson",),
    "event_source": ("eventsource",),
    "host_name": ("hostname",),
    "host_host": ("hosthost",),
    "host_ip": ("hostip",),
    "trigger_id": ("triggerid",),
    "trigger_url": ("triggerurl",),
    "zabbix_url": ("zabbixurl", "url"),
    "alert_subject": ("alertsubject",),
    "alert_message": ("alertmessage",),
}

# {EVENT.NSEVERITY} 0..5 onto the six-step scale one to one, so no Zabbix distinction is lost
# (many integrations fold High into critical; set `severities: {"4": critical}` for that).
SEVERITIES: Mapping[str, Severity] = {
    "5": Severity.CRITICAL,
    "disaster": Severity.CRITICAL,
    "4": Severity.MAJOR,
    "high": Severity.MAJOR,
    "3": Severity.MINOR,
    "average": Severity.MINOR,
    "2": Severity.WARNING,
    "warning": Severity.WARNING,
    "1": Severity.INFO,
    "information": Severity.INFO,
    "0": Severity.INFO,
    "not classified": Severity.INFO,
}


class ZabbixOptions(BaseModel):
    """Per-source settings for the zabbix kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[ZabbixField, str] = Field(default_factory=dict)  # field → your parameter's name
    severities: dict[str, Severity] = Field(default_factory=dict)  # 0..5 or name → severity
    # {EVENT.DATE} and {EVENT.TIME} are in the Zabbix server's time zone and carry no offset.
    timezone: str = "UTC"

    @field_validator("severities")
    @classmethod
    def _lower(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {key.lower(): severity for key, severity in value.items()}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from exc


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(ZabbixOptions, ctx.options, ctx.source)
    read = lenient.Record(
        lenient.load_record(body, content_type),
        _KEYS,
        overrides=opts.fields,
        placeholder=lenient.ZABBIX_MACRO,
    )

    event_id = read("event_id")
    if not event_id:
        raise PayloadError("event_id missing: add a parameter event_id = {EVENT.ID}")
    status, event, summary = _status(read)
    host = read("host_host") or read("host_name")
    said = read("event_nseverity").lower()
    named = read("event_severity").lower()
    severity = opts.severities.get(said) or opts.severities.get(named) or SEVERITIES.get(said) or SEVERITIES.get(named)
    zone = _zone(opts.timezone)
    started = _time(read("event_date"), read("event_time"), zone, "event_date")
    ended = _time(read("event_recovery_date"), read("event_recovery_time"), zone, "event_recovery_date")
    trigger_id, base = read("trigger_id"), read("zabbix_url").rstrip("/")
    links = [read("trigger_url")]
    if base and trigger_id:
        links.append(f"{base}/tr_events.php?triggerid={trigger_id}&eventid={event_id}")
    labels = {
        **_tags(read("event_tagsjson"), read("event_tags")),
        "host": read("host_name") or host,
        "trigger_id": trigger_id,
        "zabbix_event": event,
        "event_id": event_id,  # what an acknowledgement upstream names the problem by (event.acknowledge)
    }
    raw = {
        "event_id": event_id,
        "event_recovery_id": read("event_recovery_id"),
        "event_severity": read("event_severity"),
        "event_opdata": read("event_opdata"),
        "event_ack_status": read("event_ack_status"),
        "event_update_action": read("event_update_action"),
        "event_update_user": read("event_update_user"),
        "event_source": read("event_source"),
        "host_ip": read("host_ip"),
    }
    alert = Alert(
        source=ctx.source,
        kind="zabbix",
        identity=event_id,  # {EVENT.ID} is the problem's id in problem, update and recovery alike
        name=read("event_name") or read("alert_subject"),
        resource=host,
        severity=severity or Severity.WARNING,
        status=status,
        summary=summary or read("alert_subject") or read("event_name"),
        description=read("alert_message"),
        labels={key: value for key, value in labels.items() if value},
        starts_at=started,
        ends_at=ended if status is Status.RESOLVED else None,
        links=[link for link in links if link.startswith(("http://", "https://"))],
        event=_follow_up(read, status) if event == "update" else None,
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value},
    )
    if event == "update" and MARKER in read("event_update_message"):
        return Parsed(ours=1)  # Zabbix's echo of the bridge's own acknowledgement or comment: no note, no loop
    return Parsed(alerts=[alert])


def _follow_up(read: Callable[[str], str], status: Status) -> FollowUp | None:
    """An update that did not close the problem: an acknowledgement with its message, else a comment
    (the message, or what the update did: `changed severity from Average to High`). The update's
    action says which: once acknowledged, every later update of the problem says so in its status."""
    if status is Status.RESOLVED:
        return None
    user, message, action = read("event_update_user"), read("event_update_message"), read("event_update_action")
    said = action.lower()
    if "acknowledged" in said and "unacknowledged" not in said:
        return FollowUp(kind=FollowUpKind.ACKNOWLEDGEMENT, author=user, comment=message)
    return FollowUp(kind=FollowUpKind.COMMENT, author=user, comment=message or action or "updated the problem")


def _status(read: Callable[[str], str]) -> tuple[Status, str, str]:
    """Status, event label and (for updates) the note's text, as Zabbix's PagerDuty script decides."""
    value, update = read("event_value"), read("event_update_status")
    if value == "0" or (not value and read("event_status").upper() in ("RESOLVED", "OK")):
        return Status.RESOLVED, "recovery", ""
    if value and value != "1":
        raise PayloadError(f"event_value: expected 1 (problem) or 0 (recovery), got {value[:20]!r}")
    if update != "1":
        return Status.FIRING, "problem", ""
    action = read("event_update_action")
    user, message = read("event_update_user"), read("event_update_message")
    note = f"{user or 'Zabbix'} {action or 'updated the problem'}" + (f": {message}" if message else "")
    if "closed" in action.lower():
        return Status.RESOLVED, "update", note  # closed by hand in the Zabbix UI
    if read("event_ack_status").lower() == "yes" and "unacknowledged" not in action.lower():
        return Status.ACKNOWLEDGED, "update", note
    return Status.FIRING, "update", note  # a comment or a severity change: a note on the ticket


def _time(date: str, time: str, zone: tzinfo, field: str) -> datetime | None:
    """{EVENT.DATE} `2024.05.14` + {EVENT.TIME} `11:17:42` in the server's zone, as UTC."""
    if not date:
        return None
    try:
        local = datetime.strptime(f"{date} {time or '00:00:00'}", "%Y.%m.%d %H:%M:%S")
    except ValueError:
        raise PayloadError(f"{field}: expected yyyy.mm.dd and hh:mm:ss, got {date[:20]!r} {time[:20]!r}") from None
    return local.replace(tzinfo=zone).astimezone(UTC)


def _tags(tags_json: str, tags_text: str) -> dict[str, str]:
    """{EVENT.TAGSJSON} `[{"tag":…,"value":…}]`, else {EVENT.TAGS} `k:v, k:v`; repeated tags joined."""
    pairs: list[tuple[str, str]] = []
    try:
        parsed = orjson.loads(tags_json) if tags_json else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list):
        for tag in parsed:
            if isinstance(tag, dict) and lenient.text(tag.get("tag")):
                pairs.append((lenient.text(tag.get("tag")), lenient.text(tag.get("value"))))
    elif tags_text:
        for item in tags_text.split(","):
            key, _, value = item.partition(":")
            if key.strip():
                pairs.append((key.strip(), value.strip()))
    out: dict[str, str] = {}
    for key, value in pairs[:64]:
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


ADAPTER = SourceAdapter(kind="zabbix", parse=parse, content_types=lenient.TEMPLATE_TYPES, options=ZabbixOptions)
