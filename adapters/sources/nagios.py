"""Nagios Core and Icinga 2 notifications, JSON or form-encoded: one notification per request.

Nagios macros: https://assets.nagios.com/downloads/nagioscore/docs/nagioscore/4/en/macrolist.html;
notification types: nagioscore base/notifications.c. Icinga 2 runtime macros and its type strings
(FLAPPINGEND, DOWNTIMECANCELLED): https://icinga.com/docs/icinga-2/latest/doc/03-monitoring-basics/. The
body is whatever the notification command builds, so field names are matched loosely (`host_name`,
`HOSTNAME`, `NAGIOS_HOSTNAME` are one field) and a source can map any field to its own key with the
`fields` option.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.sources import lenient
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, FollowUp, FollowUpKind, Severity, Status
from bridge.core.source import ParseContext, Parsed, ParseFn, SourceAdapter
from bridge.core.sync import MARKER

NagiosField = Literal[
    "notification_type", "object_type", "host_name", "host_alias", "host_address", "host_state",
    "host_state_id", "host_output", "long_host_output", "host_problem_id", "last_host_problem_id",
    "host_duration_sec", "host_last_state_change", "service_desc", "service_state", "service_state_id",
    "service_output", "long_service_output", "service_perfdata", "service_problem_id",
    "last_service_problem_id", "service_duration_sec", "service_last_state_change", "notification_author",
    "notification_comment", "notification_number", "timet", "server", "host_groups", "service_groups", "url",
]  # fmt: skip

# Keys each field is read from, folded (lower-case, letters and digits only): the snake_case JSON of
# the snippets in deploy/snippets/, the bare macro names of env-dump scripts (pagerduty_nagios.pl),
# Opsgenie's nagios2opsgenie names and the Icinga 2 script's names. First match wins.
_KEYS: Mapping[str, tuple[str, ...]] = {
    "notification_type": ("notificationtype", "type"),
    "object_type": ("objecttype", "pdnagiosobject", "entitytype"),
    "host_name": ("hostname", "host"),
    "host_alias": ("hostdisplayname", "hostalias"),
    "host_address": ("hostaddress", "address"),
    "host_state": ("hoststate",),
    "host_state_id": ("hoststateid",),
    "host_output": ("hostoutput",),
    "long_host_output": ("longhostoutput",),
    "host_problem_id": ("hostproblemid",),
    "last_host_problem_id": ("lasthostproblemid",),
    "host_duration_sec": ("hostdurationsec",),
    "host_last_state_change": ("hostlasthardstatechange", "hostlaststatechange", "lasthoststatechange"),
    "service_desc": ("servicedesc", "servicename", "service"),
    "service_state": ("servicestate",),
    "service_state_id": ("servicestateid",),
    "service_output": ("serviceoutput",),
    "long_service_output": ("longserviceoutput",),
    "service_perfdata": ("serviceperfdata",),
    "service_problem_id": ("serviceproblemid",),
    "last_service_problem_id": ("lastserviceproblemid",),
    "service_duration_sec": ("servicedurationsec",),
    "service_last_state_change": (
        "servicelasthardstatechange",
        "servicelaststatechange",
        "lastservicestatechange",
    ),
    "notification_author": ("notificationauthor", "notificationauthorname", "notificationauthoralias"),
    "notification_comment": ("notificationcomment",),
    "notification_number": ("servicenotificationnumber", "hostnotificationnumber", "notificationnumber"),
    "timet": ("timet", "icingatimet"),
    "server": ("nagiosserver", "icingainstance"),
    "host_groups": ("hostgroups", "hostgroupnames"),
    "service_groups": ("servicegroups", "servicegroupnames"),
    "url": ("icingaweb2url", "url"),
}

# $NOTIFICATIONTYPE$ → the event label; Icinga 2's FLAPPINGEND and DOWNTIMEREMOVED fold into Nagios'.
EVENTS: Mapping[str, str] = {
    "PROBLEM": "problem",
    "RECOVERY": "recovery",
    "ACKNOWLEDGEMENT": "acknowledgement",
    "FLAPPINGSTART": "flapping_start",
    "FLAPPINGSTOP": "flapping_stop",
    "FLAPPINGEND": "flapping_stop",
    "FLAPPINGDISABLED": "flapping_disabled",
    "DOWNTIMESTART": "downtime_start",
    "DOWNTIMEEND": "downtime_end",
    "DOWNTIMECANCELLED": "downtime_cancelled",
    "DOWNTIMEREMOVED": "downtime_cancelled",
    "CUSTOM": "custom",
}

# The event labels that are follow-ups on a problem: notes on its ticket (docs/sources.md).
FOLLOW_UPS: Mapping[str, FollowUpKind] = {
    "acknowledgement": FollowUpKind.ACKNOWLEDGEMENT,
    "custom": FollowUpKind.COMMENT,
    "flapping_start": FollowUpKind.FLAPPING_START,
    "flapping_stop": FollowUpKind.FLAPPING_STOP,
    "flapping_disabled": FollowUpKind.FLAPPING_STOP,
    "downtime_start": FollowUpKind.DOWNTIME_START,
    "downtime_end": FollowUpKind.DOWNTIME_END,
    "downtime_cancelled": FollowUpKind.DOWNTIME_END,
}

# UNKNOWN and UNREACHABLE say "we cannot see it", which ops teams usually treat as major, not minor.
STATE_SEVERITY: Mapping[str, Severity] = {
    "OK": Severity.OK,
    "UP": Severity.OK,
    "WARNING": Severity.WARNING,
    "CRITICAL": Severity.CRITICAL,
    "UNKNOWN": Severity.MAJOR,
    "DOWN": Severity.CRITICAL,
    "UNREACHABLE": Severity.MAJOR,
}
_SERVICE_STATE_IDS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
_HOST_STATE_IDS = ("UP", "DOWN", "UNREACHABLE")
_CLEAR_STATES = frozenset({"OK", "UP"})
_NAGIOS_ESCAPE = re.compile(r"\\(\\|n)")


class NagiosOptions(BaseModel):
    """Per-source settings for the nagios and icinga2 kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # field → the key your notification command sends it as, when it is none of the usual names.
    fields: dict[NagiosField, str] = Field(default_factory=dict)
    # state name (CRITICAL, DOWN, UNKNOWN, ...) → severity, over STATE_SEVERITY.
    severities: dict[str, Severity] = Field(default_factory=dict)
    # Authors whose acknowledgements are the bridge's own (its `upstream: {author: ...}`): their
    # ACKNOWLEDGEMENT notifications are dropped, as are those whose comment carries the bridge's marker.
    own_authors: list[str] = Field(default_factory=lambda: ["alert-ticket-bridge"])

    @field_validator("severities")
    @classmethod
    def _upper(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {state.upper(): severity for state, severity in value.items()}


def _parser(kind: str) -> ParseFn:
    def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
        opts = lenient.options(NagiosOptions, ctx.options, ctx.source)
        read = lenient.Record(
            lenient.load_record(body, content_type),
            _KEYS,
            overrides=opts.fields,
            placeholder=lenient.NAGIOS_MACRO,
            strip_prefixes=("nagios", "icinga"),
        )
        alert = _to_alert(kind, read, opts, ctx)
        if _ours(alert, opts):
            return Parsed(ours=1)  # the tool's echo of the bridge's acknowledgement: no note, no loop
        return Parsed(alerts=[alert])

    parse.__doc__ = f"Parse one {kind} notification (JSON, broken JSON or form) into one Alert."
    return parse


def _ours(alert: Alert, opts: NagiosOptions) -> bool:
    """An acknowledgement (or comment) the bridge itself made upstream: its marker, or one of its authors."""
    event = alert.event
    if event is None or event.kind not in (FollowUpKind.ACKNOWLEDGEMENT, FollowUpKind.COMMENT):
        return False
    return MARKER in event.comment or (bool(event.author) and event.author in opts.own_authors)


def _to_alert(kind: str, read: lenient.Record, opts: NagiosOptions, ctx: ParseContext) -> Alert:
    ntype = read("notification_type").upper().replace(" ", "")
    if not ntype:
        raise PayloadError("notification_type missing: send $NOTIFICATIONTYPE$ (Icinga: $notification.type$)")
    event = EVENTS.get(ntype)
    if event is None:
        raise PayloadError(f"notification_type: unknown value {ntype[:40]!r}; expected one of {', '.join(EVENTS)}")
    host = read("host_name")
    if not host:
        raise PayloadError("host_name missing: send $HOSTNAME$ (Icinga: $host.name$)")
    service = read("service_desc")
    is_service = bool(service) and read("object_type").lower() != "host"
    obj = "service" if is_service else "host"
    state = _state(read, obj)
    status = _status(event, state)
    severity = opts.severities.get(state) or STATE_SEVERITY.get(state, Severity.WARNING)
    if status is Status.FIRING and severity is Severity.OK:
        severity = Severity.WARNING  # flapping or a custom note about an object that is up right now
    what = f"{service} on {host}" if is_service else host
    output, long_output = read(f"{obj}_output"), _unescape(read(f"long_{obj}_output"))
    summary, description = _texts(event, what, state, output, long_output, read)
    starts_at, ends_at = _times(read, obj, status)
    problem_id = read(f"{obj}_problem_id")
    if problem_id in ("", "0") and event == "recovery":
        problem_id = read(f"last_{obj}_problem_id")  # on RECOVERY the closed problem's id is the last one
    labels = {
        "host": host,
        "service": service if is_service else "",
        "object_type": obj,
        "state": state,
        f"{kind}_event": event,
        "problem_id": "" if problem_id == "0" else problem_id,
        "server": read("server"),
        "host_groups": read("host_groups"),
        "service_groups": read("service_groups") if is_service else "",
    }
    raw = {
        "notification_type": ntype,
        "host_address": read("host_address"),
        "host_alias": read("host_alias"),
        "notification_number": read("notification_number"),
        "notification_author": read("notification_author"),
        "notification_comment": read("notification_comment"),
        "perfdata": read("service_perfdata") if is_service else "",
    }
    url = read("url")
    follow_up = FOLLOW_UPS.get(event)
    return Alert(
        source=ctx.source,
        kind=kind,
        # host!service keeps every notification of one object on one ticket, including the
        # DOWNTIME*/FLAPPING* ones that carry problem id 0; starts_at tells problems apart.
        identity=f"{host}!{service}" if is_service else host,
        name=service if is_service else "HOST",
        resource=host,
        severity=severity,
        status=status,
        summary=summary,
        description=description,
        labels={key: value for key, value in labels.items() if value},
        starts_at=starts_at,
        ends_at=ends_at,
        links=[url] if url.startswith(("http://", "https://")) else [],
        event=FollowUp(
            kind=follow_up,
            author=read("notification_author"),
            comment=read("notification_comment"),
            at=lenient.epoch(read("timet"), "timet"),  # a notification sent twice is one follow-up
        )
        if follow_up
        else None,
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value},
    )


def _state(read: lenient.Record, obj: str) -> str:
    state = read(f"{obj}_state").upper()
    if state:
        return state
    ids = _SERVICE_STATE_IDS if obj == "service" else _HOST_STATE_IDS
    state_id = read(f"{obj}_state_id")
    return ids[int(state_id)] if state_id.isdigit() and int(state_id) < len(ids) else ""


def _status(event: str, state: str) -> Status:
    """What each notification type means for the ticket (table in docs/sources.md)."""
    cleared = state in _CLEAR_STATES
    if event in ("problem", "flapping_start"):
        return Status.FIRING
    if event == "recovery":
        return Status.RESOLVED
    if event in ("acknowledgement", "downtime_start"):
        # Planned downtime is a human saying "we know": like an acknowledgement, it never resolves
        # the ticket and never opens one for an object that is fine.
        return Status.ACKNOWLEDGED
    if event == "custom":
        return Status.ACKNOWLEDGED if cleared else Status.FIRING
    # flapping_stop/disabled, downtime_end/cancelled: Nagios suppressed PROBLEM and RECOVERY while
    # flapping or in downtime, so the state it reports now is the news: clear if OK/UP, else firing.
    return Status.RESOLVED if cleared else Status.FIRING


def _texts(event: str, what: str, state: str, output: str, long_output: str, read: lenient.Record) -> tuple[str, str]:
    """Summary and description: for notes (ack, downtime, flapping, custom) what the note should say."""
    author, comment = read("notification_author"), read("notification_comment")
    by = f" by {author}" if author else ""
    said = f": {comment}" if comment else ""
    is_state = f"{what} is {state}" if state else what
    headline = {
        "acknowledgement": f"Acknowledged{by}{said}",
        "flapping_start": f"Flapping started: {is_state} and changing state often",
        "flapping_stop": f"Flapping stopped: {is_state}",
        "flapping_disabled": f"Flap detection disabled: {is_state}",
        "downtime_start": f"Scheduled downtime started{by}{said}",
        "downtime_end": f"Scheduled downtime ended: {is_state}",
        "downtime_cancelled": f"Scheduled downtime cancelled{by}{said}",
        "custom": f"Custom notification{by}{said}",
    }.get(event)
    if headline is None:  # problem, recovery: the plugin's own words
        return output or is_state, long_output
    detail = f"{is_state}: {output}" if output else is_state
    return headline, "\n".join(part for part in (detail, long_output) if part)


def _unescape(long_output: str) -> str:
    """Nagios escapes newlines and backslashes in $LONG*OUTPUT$ (escape_newlines() in base/utils.c).

    Pasted into a JSON string that escaping happens to decode; sent through an environment macro
    (jq, env-dump forms) it arrives literally as `\\n`, so it is undone here.
    """
    return _NAGIOS_ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else "\\", long_output)


def _times(read: lenient.Record, obj: str, status: Status) -> tuple[datetime | None, datetime | None]:
    """starts_at: when the current problem state began; ends_at: when it cleared."""
    timet = lenient.epoch(read("timet"), "timet")
    changed = lenient.epoch(read(f"{obj}_last_state_change"), f"{obj}_last_state_change")
    if status is Status.RESOLVED:
        return None, changed or timet  # the problem's start is not in a RECOVERY notification
    if changed:
        return changed, None
    duration = read(f"{obj}_duration_sec")
    if timet and duration:
        try:
            # $SERVICEDURATIONSEC$ counts from the last state change: timet minus it is the start.
            return timet - timedelta(seconds=float(duration)), None
        except (ValueError, OverflowError):
            raise PayloadError(f"{obj}_duration_sec: expected seconds, got {duration[:40]!r}") from None
    return None, None


NAGIOS = SourceAdapter(
    kind="nagios", parse=_parser("nagios"), content_types=lenient.TEMPLATE_TYPES, options=NagiosOptions
)
ICINGA2 = SourceAdapter(
    kind="icinga2", parse=_parser("icinga2"), content_types=lenient.TEMPLATE_TYPES, options=NagiosOptions
)
