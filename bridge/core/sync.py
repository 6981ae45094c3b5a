"""The loop back's contract: what a desk tells the bridge (a `DeskEvent`) and what the bridge tells a
monitoring tool (an `Upstream` acknowledgement).

Desk side. A desk plugin that can report human changes implements, beside `bridge.core.desk.Desk`:

- `parse_events(body, headers) -> list[DeskEvent]`, pure, for the pushed webhook
  (`POST /desk-events/{desk}`); raises `PayloadError` when the body is not the desk's webhook;
- `async changes_since(since_ms, cursor) -> ChangePage`, for the poll (`sync: {poll: 60s}`): the changes
  made at or after `since_ms`, oldest first, one page at a time (`cursor` the page token, None first).

Both mark the bridge's own writes (`ours`): the integration user's, or those carrying `MARKER`. The
loop back drops them, so the bridge never echoes itself.

Upstream side. An upstream plugin (entry point group `alert_ticket_bridge.upstreams`, named by the
source kind it answers) acknowledges alerts in the tool that sent them, through the tool's own API.
Like desks, upstreams never retry: they raise `DeskTransient` (retry later, from Redis) or
`DeskRejected` (dead letter), and the caller applies the retry policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import aiohttp

from bridge.core.desk import TicketRef

# Written into every note, comment and silence the bridge makes, so that a desk or a tool echoing it
# back is recognised as the bridge's own even when the integration user is shared.
MARKER = "[alert-ticket-bridge]"


class DeskEventKind(StrEnum):
    """A human change to a ticket, reduced to what the loop back acts on."""

    RESOLVED = "resolved"  # resolved or closed by a person (not cancelled)
    CANCELLED = "cancelled"  # cancelled, won't fix, rejected
    REOPENED = "reopened"  # back to open by a person
    ASSIGNED = "assigned"  # assigned to someone, or put in progress: acknowledge upstream
    COMMENTED = "commented"  # a comment or work note by a person
    UPDATED = "updated"  # anything else: recorded in the audit trail only


@dataclass(frozen=True, slots=True)
class DeskEvent:
    desk: str  # the desk's name in the mapping
    ticket: TicketRef  # at least `id` (the desk's key for API calls)
    kind: DeskEventKind
    at_ms: int  # when the desk made the change (its own clock): the order of events on one ticket
    event_id: str  # unique per change on this desk (ServiceNow sys_mod_count, a Jira changelog id, ...)
    author: str = ""  # the desk user who made it
    text: str = ""  # the comment's text, or the new state's name
    correlation_id: str = ""  # the bridge's correlation id on the ticket, when the payload carries it
    ours: bool = False  # made by the bridge itself (integration user or MARKER): never acted on


@dataclass(frozen=True, slots=True)
class ChangePage:
    events: list[DeskEvent]
    cursor: str | None = None  # the next page's token; None when this was the last page


class DeskEvents(Protocol):
    """Optional, beside `Desk`: the desk can report changes (pushed and polled)."""

    def parse_events(self, body: bytes, headers: Mapping[str, str]) -> list[DeskEvent]: ...

    async def changes_since(self, since_ms: int, cursor: str | None) -> ChangePage: ...


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """One incident's alerts of one source, acknowledged (or released) in that source's tool."""

    incident: str  # the incident's base, `<route id>:<key hash>`
    source: str  # the source's name in the mapping
    ticket: TicketRef
    author: str  # the desk user who acted
    comment: str  # says why, links the ticket, carries MARKER
    members: Sequence[Mapping[str, str]]  # each member alert's labels, as the source reported them
    until_ms: int = 0  # for tools whose acknowledgement expires (Alertmanager silences): until when
    handle: str = ""  # what an earlier acknowledge returned (a silence id), for extend and release
    extra: Mapping[str, str] = field(default_factory=dict)


class Upstream(Protocol):
    name: str  # the source's name

    async def acknowledge(self, ack: Acknowledgement) -> str:
        """Acknowledge; returns a handle for `release` and `extend` ("" when the tool has none)."""
        ...

    async def extend(self, ack: Acknowledgement) -> str:
        """Keep it acknowledged until `ack.until_ms`; returns the (possibly new) handle."""
        ...

    async def release(self, ack: Acknowledgement) -> None:
        """Undo the acknowledgement (expire the silence, remove the acknowledgement)."""
        ...

    async def comment(self, ack: Acknowledgement, text: str) -> None:
        """A desk comment, passed upstream where the tool keeps comments; a no-op where it does not."""
        ...

    async def aclose(self) -> None: ...


class UpstreamSettings(Protocol):
    """An upstream kind's config model (pydantic, extra="forbid"), as `sources.<name>.upstream`."""

    def build(self, name: str, session: aiohttp.ClientSession) -> Upstream: ...
