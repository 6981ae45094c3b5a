"""Jira's changes as desk events (the loop back, bridge.core.sync), for `JiraDesk`: a webhook's body
(`jira:issue_updated`, `comment_created`) or a searched issue's changelog histories and comments.

A changelog history is one event, its kind from its status, resolution and assignee items (a
resolution, or a status in the done category: resolved, or cancelled when it is one of the desk's
`cancelled`; the resolution cleared: reopened; into an In Progress status or an assignee set:
assigned); a comment is `commented`. Ours: by the integration user (`Identity`), or carrying MARKER.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.desks.events import Identity, Reader, decode
from adapters.desks.jira_fields import adf_text
from bridge.core.desk import TicketRef
from bridge.core.sync import DeskEvent, DeskEventKind

CORRELATION = re.compile(r"[A-Za-z0-9_.-]+:[0-9a-f]{6,}:[0-9a-z]+")  # a correlation id, after the label prefix
TIMES = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")  # Jira's date-times
_KNOWN_EVENTS = frozenset({"jira:issue_updated", "comment_created"})


class JiraEvents:
    def __init__(
        self, name: str, identity: Identity, *, url: str, label_prefix: str, cancelled: Iterable[str], by_label: bool
    ) -> None:
        """`by_label`: the correlation id is in a label (`label_prefix` + id), so an issue without one is
        not the bridge's; `cancelled`: the resolutions and statuses that mean cancelled, not resolved."""
        self.name = name
        self._identity = identity
        self._url = url
        self._prefix = label_prefix
        self._cancelled = {c.casefold() for c in cancelled}
        self._by_label = by_label

    def parse(self, body: bytes) -> list[DeskEvent]:
        """A Jira webhook: `jira:issue_updated` (its changelog: one event; its comment, when the update
        was a comment: another) or `comment_created`. Other webhook events carry no human change we
        act on and give no event."""
        what = f"{self.name} desk event"
        data = Reader(decode(body, what), what)
        event = data.text("webhookEvent", required=True, limit=100)
        if event not in _KNOWN_EVENTS:
            return []
        issue = data.obj("issue", required=True)
        assert issue is not None
        ref, correlation, status = self._issue(issue)
        at_ms = data.integer("timestamp") or 0
        events = []
        changelog = data.obj("changelog")
        if changelog is not None:
            history = {"id": changelog.text("id", required=True, limit=64), "created_ms": at_ms}
            events.append(self._history(ref, correlation, status, history, changelog, data.obj("user")))
        comment = data.obj("comment")
        if comment is not None:
            events.append(self._comment_event(ref, correlation, comment, at_ms))
        return events

    def issue_changes(self, issue: Reader, since_ms: int) -> list[DeskEvent]:
        ref, correlation, status = self._issue(issue)
        if not correlation and self._by_label:
            return []  # not an issue the bridge opened
        events = []
        changelog = issue.obj("changelog")
        for history in changelog.items("histories") if changelog is not None else []:
            at_ms = history.time_ms("created", TIMES, required=True) or 0
            if at_ms >= since_ms:
                shown = {"id": history.text("id", required=True, limit=64), "created_ms": at_ms}
                events.append(self._history(ref, correlation, status, shown, history, history.obj("author")))
        fields = issue.obj("fields")
        comments = fields.obj("comment") if fields is not None else None
        for comment in comments.items("comments") if comments is not None else []:
            at_ms = comment.time_ms("created", TIMES, required=True) or 0
            if at_ms >= since_ms:
                events.append(self._comment_event(ref, correlation, comment, at_ms))
        return events

    def _issue(self, issue: Reader) -> tuple[TicketRef, str, tuple[str, str]]:
        """The issue's ref, its correlation id (from the label) and its current status and category."""
        key = issue.text("key", required=True, limit=100)
        fields = issue.obj("fields")
        correlation, status = "", ("", "")
        if fields is not None:
            prefix = self._prefix
            for label in fields.data.get("labels") or [] if isinstance(fields.data.get("labels"), list) else []:
                text = str(label)
                if text.startswith(prefix) and CORRELATION.fullmatch(text[len(prefix) :]):
                    correlation = text[len(prefix) :]
            shown = fields.obj("status")
            if shown is not None:
                category = shown.obj("statusCategory")
                status = (shown.text("name", limit=200), category.text("key", limit=50) if category else "")
        return TicketRef(id=key, display=key, url=f"{self._url}/browse/{key}"), correlation, status

    def _history(
        self,
        ref: TicketRef,
        correlation: str,
        status: tuple[str, str],
        history: Mapping[str, Any],
        holder: Reader,
        author: Reader | None,
    ) -> DeskEvent:
        """One changelog history as one event, its kind from the status, resolution and assignee items."""
        moved_to, resolution, reopened, assigned = "", "", False, False
        for item in holder.items("items"):
            name = (item.text("fieldId", limit=100) or item.text("field", limit=100)).lower()
            if name == "status":
                moved_to = item.text("toString", limit=200)
            elif name == "resolution":
                resolution = item.text("toString", limit=200)
                reopened = reopened or (not resolution and bool(item.text("fromString", limit=200)))
            elif name == "assignee":
                assigned = assigned or bool(item.text("to", limit=200) or item.text("toString", limit=200))
        category = status[1] if moved_to and moved_to == status[0] else ""
        kind = DeskEventKind.UPDATED
        if resolution or category == "done":
            done_as = {resolution.casefold(), moved_to.casefold()}
            kind = DeskEventKind.CANCELLED if done_as & self._cancelled else DeskEventKind.RESOLVED
        elif reopened:
            kind = DeskEventKind.REOPENED
        elif category == "indeterminate" or assigned:
            kind = DeskEventKind.ASSIGNED
        who = _user_names(author)
        return DeskEvent(
            desk=self.name,
            ticket=ref,
            kind=kind,
            at_ms=int(history["created_ms"]),
            event_id=f"changelog:{history['id']}",
            author=who[0] if who else "",
            text=moved_to or resolution,
            correlation_id=correlation,
            ours=self._identity.ours(who),
        )

    def _comment_event(self, ref: TicketRef, correlation: str, comment: Reader, default_ms: int) -> DeskEvent:
        raw = comment.data.get("body")
        text = (raw if isinstance(raw, str) else adf_text(raw) if isinstance(raw, dict) else "")[:10_000]
        who = _user_names(comment.obj("author"))
        return DeskEvent(
            desk=self.name,
            ticket=ref,
            kind=DeskEventKind.COMMENTED,
            at_ms=comment.time_ms("created", TIMES) or default_ms,
            event_id=f"comment:{comment.text('id', required=True, limit=64)}",
            author=who[0] if who else "",
            text=text,
            correlation_id=correlation,
            ours=self._identity.ours(who, text),
        )


def _user_names(user: Reader | None) -> list[str]:
    """What a Jira user object calls its user, most specific first: accountId (Cloud), name and key
    (Data Center), emailAddress (when the site shows it)."""
    if user is None:
        return []
    return [n for n in (user.text(k, limit=200) for k in ("accountId", "name", "key", "emailAddress")) if n]
