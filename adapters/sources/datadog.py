"""Datadog Webhooks integration with a custom payload of its documented $VARIABLES: one notification.

Variables: https://docs.datadoghq.com/integrations/webhooks/#usage; the payload to configure is
deploy/snippets/datadog/payload.json. JSON, or form fields when the webhook is set to "Encode as
form". `$DATE` and `$LAST_UPDATED` are epoch milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters.sources import lenient
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter

# $ALERT_TRANSITION. Warn and No Data fire (the ticket should say so); Renotify repeats.
TRANSITIONS: Mapping[str, Status] = {
    "triggered": Status.FIRING,
    "re-triggered": Status.FIRING,
    "warn": Status.FIRING,
    "re-warn": Status.FIRING,
    "no data": Status.FIRING,
    "re-no data": Status.FIRING,
    "renotify": Status.FIRING,
    "recovered": Status.RESOLVED,
}
# $ALERT_PRIORITY P1..P5 onto the scale one to one; a Warn transition is a warning whatever the
# monitor's priority, since it is the monitor's warning threshold that was crossed.
PRIORITIES: Mapping[str, Severity] = {
    "p1": Severity.CRITICAL,
    "p2": Severity.MAJOR,
    "p3": Severity.MINOR,
    "p4": Severity.WARNING,
    "p5": Severity.INFO,
}
ALERT_TYPES: Mapping[str, Severity] = {  # $ALERT_TYPE, when the monitor has no priority
    "error": Severity.MAJOR,
    "warning": Severity.WARNING,
    "info": Severity.INFO,
    "success": Severity.OK,
}
_FIRST_OF_CYCLE = frozenset({"triggered", "warn", "no data"})
_MARKDOWN_FENCE = re.compile(r"^%%%\s*$", re.MULTILINE)  # Datadog wraps markdown bodies in %%% lines


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    doc = lenient.load_record(body, content_type)
    read = lenient.Record(doc, {}).first

    monitor = read("alertid")
    if not monitor:
        raise PayloadError('alert_id missing: the webhook payload needs "alert_id": "$ALERT_ID"')
    scope = read("alertscope")
    transition = read("alerttransition").lower()
    alert_type = read("alerttype").lower()
    status = TRANSITIONS.get(transition)
    if status is None:
        if transition:
            raise PayloadError(f"alert_transition: unknown value {transition[:40]!r}")
        status = Status.RESOLVED if alert_type == "success" else Status.FIRING
    if transition in ("warn", "re-warn"):
        severity = Severity.WARNING
    else:
        severity = PRIORITIES.get(read("alertpriority").lower()) or ALERT_TYPES.get(alert_type, Severity.WARNING)
    tags = _tags(read("tags"))
    at = lenient.epoch(read("date", "lastupdated"), "date", per_second=1000)
    cycle = read("alertcyclekey")
    labels = {
        **tags,
        "alert_id": monitor,
        "alert_scope": scope,
        "alert_cycle_key": cycle,
        "datadog_event": transition.replace(" ", "_"),
        "priority": read("alertpriority"),
    }
    org: dict[str, Any] = doc["org"] if isinstance(doc.get("org"), dict) else {}
    raw = {
        "id": read("id"),
        "event_type": read("eventtype"),
        "alert_metric": read("alertmetric"),
        "alert_query": read("alertquery"),
        "alert_status": read("alertstatus"),
        "aggreg_key": read("aggregkey"),
        "org_id": lenient.text(org.get("id")) or read("orgid"),
        "org_name": lenient.text(org.get("name")) or read("orgname"),
    }
    title = read("alerttitle", "title")
    alert = Alert(
        source=ctx.source,
        kind="datadog",
        # Monitor and group: stable across trigger/resolve cycles, so the route's reopen window and
        # flap detection work; the cycle key is a label for routes that want a ticket per cycle.
        identity=f"{monitor}:{scope}" if scope else monitor,
        name=title,
        resource=read("hostname") or tags.get("host", ""),
        severity=severity,
        status=status,
        summary=read("title", "alerttitle"),
        description=_MARKDOWN_FENCE.sub("", read("body", "eventmsg", "textonlymsg")).strip(),
        labels={key: value for key, value in labels.items() if value},
        # $DATE is this notification's time: the cycle's start only on its first notification.
        starts_at=at if status is Status.FIRING and transition in _FIRST_OF_CYCLE else None,
        ends_at=at if status is Status.RESOLVED else None,
        links=[link for link in (read("link"),) if link.startswith(("http://", "https://"))],
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value},
    )
    return Parsed(alerts=[alert])


def _tags(text: str) -> dict[str, str]:
    """$TAGS `env:prod,host:web-04,monitor`: key:value pairs; bare tags become key → "true"."""
    out: dict[str, str] = {}
    for item in text.split(",")[:64]:
        key, sep, value = item.strip().partition(":")
        if key:
            value = value if sep else "true"
            out[key] = f"{out[key]},{value}" if key in out and out[key] != value else value
    return out


ADAPTER = SourceAdapter(kind="datadog", parse=parse, content_types=lenient.TEMPLATE_TYPES)
