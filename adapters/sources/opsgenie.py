"""Opsgenie Alert API v2: the calls an Opsgenie client makes on one alert, each as an `Alert`.

A client's API URL becomes `http://<bridge>/opsgenie/<source>/`; the bridge's door for it
(`bridge/ingress/opsgenie.py`) reads the call from the URL (`POST v2/alerts` creates,
`POST v2/alerts/{identifier}/close|acknowledge|unacknowledge|notes`, `PUT .../message|description|priority`),
resolves the identifier to the alias and hands this parser the body with `ctx.params`:

    action     create (also what a body posted to /webhook/<source> is), close, acknowledge,
               unacknowledge, notes, message, description, priority
    previous   the alert as the last create (or update) of that alias left it (its JSON), if the door knows it
    status     that alert's status since: firing, acknowledged, or resolved once closed

The alias is the identity (a create without one is keyed by its message); the message is the summary,
and the name too unless an `alertname` detail names the alert (Alertmanager sends its group's common
labels as details). Opsgenie's calls other than
create carry only the alias, so they are made from `previous`: a close resolves it, an acknowledgement
and a note become follow-ups (notes on the ticket), an update changes its summary, description or
severity. A call on an alias the door does not know, or on a closed alert, gives no alert. Opsgenie
gives no start time, so occurrences are the engine's own (`starts_at` is empty): a create after a close
is a new one; a create repeated while the alert is open (a deduplicated one, to Opsgenie) keeps its
status, so a repeat after an acknowledgement is not news.

Format: Opsgenie's Alert API, https://docs.opsgenie.com/docs/alert-api, and its OpenAPI document
(opsgenie/opsgenie-python-sdk `opsgenie-oas.yml`: `CreateAlertPayload`, `AlertActionPayload`,
`AddNoteToAlertPayload`); field limits as that documentation gives them (longer values are cut, as
Opsgenie cuts them). Senders: prometheus/alertmanager `notify/opsgenie/opsgenie.go` (recorded in
tests/fixtures/sources/opsgenie_*), zabbix/zabbix `templates/media/opsgenie/media_opsgenie.yaml`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, FollowUp, FollowUpKind, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter

KIND = "opsgenie"
ACTIONS = ("create", "close", "acknowledge", "unacknowledge", "notes", "message", "description", "priority")
# Opsgenie's priorities onto the scale one to one; P3 is Opsgenie's default.
PRIORITIES: Mapping[str, Severity] = {
    "P1": Severity.CRITICAL,
    "P2": Severity.MAJOR,
    "P3": Severity.MINOR,
    "P4": Severity.WARNING,
    "P5": Severity.INFO,
}
DEFAULT_PRIORITY = "P3"
OPEN: Mapping[str, Status] = {"firing": Status.FIRING, "acknowledged": Status.ACKNOWLEDGED}  # a status the door kept
# A create without a priority: the `severity` detail where a sender puts one there (Alertmanager sends
# its common labels as details), in the spellings of the Prometheus world; else P3.
SEVERITY_DETAILS: Mapping[str, str] = {
    "critical": "P1", "crit": "P1", "emergency": "P1", "page": "P1", "p1": "P1",
    "high": "P2", "major": "P2", "error": "P2", "p2": "P2",
    "medium": "P3", "minor": "P3", "p3": "P3",
    "warning": "P4", "warn": "P4", "p4": "P4",
    "low": "P5", "info": "P5", "informational": "P5", "none": "P5", "p5": "P5",
}  # fmt: skip
# Field limits of the Alert API (characters); a longer value is cut.
LIMITS: Mapping[str, int] = {
    "message": 130,
    "alias": 512,
    "description": 15000,
    "entity": 512,
    "source": 100,
    "user": 100,
    "note": 25000,
    "tag": 50,
    "detail": 8000,
}
MAX_TAGS = 20
MAX_DETAILS = 100  # keys kept (Opsgenie bounds the details' total size, 8000 characters)


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    action = ctx.params.get("action", "create")
    if action not in ACTIONS:
        raise PayloadError(f"action: unknown Opsgenie alert action {action[:40]!r}")
    doc = _load(body, required=action in ("create", "notes", "message", "description", "priority"))
    previous = _previous(ctx)
    status = OPEN.get(ctx.params.get("status", "")) if previous is not None else None
    if action == "create":
        return Parsed([_create(doc, ctx, status)])
    if previous is None or status is None:
        return Parsed()  # an alias the door does not know, or a closed alert: nothing to act on
    user, note = _text(doc, "user"), _text(doc, "note")
    now = ctx.received_at
    raw = {**previous.raw, "user": user, "note": note}
    update: dict[str, Any] = {"received_at": now, "status": status, "event": None, "raw": raw}
    if action == "close":
        update.update(status=Status.RESOLVED, ends_at=now)
    elif action == "acknowledge":
        event = FollowUp(kind=FollowUpKind.ACKNOWLEDGEMENT, author=user, comment=note, at=now)
        update.update(status=Status.ACKNOWLEDGED, event=event)
    elif action == "unacknowledge":
        said = "unacknowledged" + (f": {note}" if note else "")
        event = FollowUp(kind=FollowUpKind.COMMENT, author=user, comment=said, at=now)
        update.update(status=Status.FIRING, event=event)
    elif action == "notes":
        if not note:
            raise PayloadError("note: Note can not be empty.")
        update.update(event=FollowUp(kind=FollowUpKind.COMMENT, author=user, comment=note, at=now))
    elif action == "message":
        message = _required(doc, "message", "Message can not be empty.")
        update.update(name=message, summary=message)
    elif action == "description":
        update.update(description=_text(doc, "description"))
    else:  # priority
        priority = _priority(doc)
        if priority is None:
            raise PayloadError("priority: Priority can not be empty.")
        update.update(severity=PRIORITIES[priority], labels={**previous.labels, "priority": priority})
    return Parsed([previous.model_copy(update=update)])


def _create(doc: Mapping[str, Any], ctx: ParseContext, status: Status | None) -> Alert:
    message = _required(doc, "message", "Message can not be empty.")
    alias = _text(doc, "alias") or message
    details = _details(doc)
    tags = _tags(doc)
    priority = _priority(doc) or SEVERITY_DETAILS.get(details.get("severity", "").lower(), DEFAULT_PRIORITY)
    entity, sender, note = _text(doc, "entity"), _text(doc, "source"), _text(doc, "note")
    labels = dict(details)
    for tag in tags:  # `key:value` tags (Zabbix sends its event tags so) as labels, where no detail has the key
        key, sep, value = tag.partition(":")
        if sep and key and key not in labels:
            labels[key] = value
    labels["priority"] = priority
    if tags:
        labels["tags"] = ",".join(tags)
    if entity:
        labels["entity"] = entity
    description = _text(doc, "description")
    if note:
        description = f"{description}\n\nNote: {note}" if description else f"Note: {note}"
    try:
        return Alert(
            source=ctx.source,
            kind=KIND,
            identity=alias,
            name=details.get("alertname") or message,  # as Alertmanager's alerts are named, where it says
            resource=entity or details.get("instance") or details.get("host") or "",
            severity=PRIORITIES[priority],
            status=status or Status.FIRING,  # a repeat while open keeps the alert's status
            summary=message,
            description=description,
            labels=labels,
            received_at=ctx.received_at,
            raw={"alias": alias, "opsgenie_source": sender, "user": _text(doc, "user"), "note": note, "tags": tags},
        )
    except ValidationError as exc:  # only a time out of range could be refused here
        raise PayloadError(str(exc.errors()[0]["msg"])) from None


def _load(body: bytes, *, required: bool) -> Mapping[str, Any]:
    if not body.strip():
        if required:
            raise PayloadError("body: a JSON object is required")
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("body: expected a JSON object")
    return doc


def _previous(ctx: ParseContext) -> Alert | None:
    text = ctx.params.get("previous")
    if not text:
        return None
    try:
        return Alert.model_validate_json(text)
    except ValidationError:
        return None  # a record of an older shape: as if unknown


def _text(doc: Mapping[str, Any], field: str) -> str:
    value = doc.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{field}: expected a string")
    return value.strip()[: LIMITS[field]]


def _required(doc: Mapping[str, Any], field: str, problem: str) -> str:
    value = _text(doc, field)
    if not value:
        raise PayloadError(f"{field}: {problem}")
    return value


def _priority(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("priority")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.strip().upper() not in PRIORITIES:
        raise PayloadError("priority: Priority should be one of [P1, P2, P3, P4, P5]")
    return value.strip().upper()


def _tags(doc: Mapping[str, Any]) -> list[str]:
    value = doc.get("tags")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise PayloadError("tags: expected a list of strings")
    return [tag.strip()[: LIMITS["tag"]] for tag in value if tag.strip()][:MAX_TAGS]


def _details(doc: Mapping[str, Any]) -> dict[str, str]:
    value = doc.get("details")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError("details: expected an object of strings")
    out: dict[str, str] = {}
    for key, item in list(value.items())[:MAX_DETAILS]:
        if isinstance(item, dict | list):
            raise PayloadError(f"details.{str(key)[:40]}: expected a string")
        text = "" if item is None else str(item).lower() if isinstance(item, bool) else str(item)
        out[str(key)[: LIMITS["tag"]]] = text[: LIMITS["detail"]]
    return out


def verify(body: bytes, headers: Mapping[str, str], query: Mapping[str, str], secret: str, now: datetime) -> None:
    """`Authorization: GenieKey <key>`, as every Opsgenie client sends its API key (`Bearer` is taken too)."""
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("geniekey", "bearer") or not key.strip():
        raise AuthError("missing 'Authorization: GenieKey <key>' header")
    # Header bytes that are not UTF-8 reach here as surrogate escapes: compared as those bytes.
    if not hmac.compare_digest(key.strip().encode("utf-8", "surrogateescape"), secret.encode()):
        raise AuthError("the API key does not match this source's secret")


ADAPTER = SourceAdapter(kind=KIND, parse=parse, verify=verify)
