"""The desk contract: a small async Protocol that every service-desk client implements, and the
config model a desk kind registers (`DeskSettings`).

Adapters never retry: they translate the desk's answer into `DeskTransient` (retry),
`DeskAuthExpired` (re-authenticate once) or `DeskRejected` (dead-letter) and let
`bridge.delivery.guard` apply the one retry policy.

Optional: `async close_duplicate(ref, parent: TicketRef, note)` closes a ticket as a duplicate of
`parent`, linked in the desk's own way (ServiceNow's `parent_incident`); a topology parent that adopts a
child incident has its ticket closed so. A desk without it gets `resolve(ref, note, {})`, the note naming
the parent's ticket.

Optional, for change-aware tickets and problem records (route `change:` and `problem:`; docs/desks.md
says which desks have them; `ChangeAware` and `ProblemDesk` below spell them out):

- `async change_covering(ci, at_ms) -> ChangeRef | None`: an approved change whose planned window covers
  `at_ms` on the configuration item named `ci`. A desk without it is not asked: the ticket opens.
- `async link_change(ref, change, note)`: link an opened ticket to the change it opened during (ServiceNow's
  `caused_by`, a Jira issue link), with a note. Without it, the ticket gets a note naming the change.
- `async open_problem(correlation_id, fields) -> TicketRef` and `async link_problem(ref, problem, note)`: a
  problem record, and a ticket linked to it (ServiceNow's `problem_id`, a Jira issue link), with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import aiohttp


class TicketPhase(StrEnum):
    """The desk's state of a ticket, reduced to what the lifecycle needs."""

    OPEN = "open"  # new, in progress, on hold
    RESOLVED = "resolved"  # resolved by us or a human; may be reopened
    CLOSED = "closed"  # closed or cancelled: read-only, never reopened


@dataclass(frozen=True, slots=True)
class TicketRef:
    id: str  # the desk's key for API calls (ServiceNow sys_id, Jira issue key, Remedy Request ID)
    display: str = ""  # what a human calls it (INC0010002)
    url: str = ""


@dataclass(frozen=True, slots=True)
class TicketState:
    phase: TicketPhase
    raw_state: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)  # current values of the fields we write


class Desk(Protocol):
    """One service desk. Fields are already rendered strings, keyed by the desk's own field names.

    A desk whose `find` may not see a ticket for a while after its `open` (a search index that trails
    the writes, as Jira Cloud's does) sets `find_lag`, in seconds, as an attribute: an open whose
    answer was lost is then made again only once `find`, asked that long after the lost open was
    sent, still does not find it. Without it, `find` is taken to see every ticket opened before.
    """

    name: str

    async def find(self, correlation_id: str) -> TicketRef | None:
        """The newest ticket carrying this correlation id, open or not, or None."""
        ...

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef: ...

    async def note(self, ref: TicketRef, text: str) -> None: ...

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None: ...

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None: ...

    async def reopen(self, ref: TicketRef, note: str) -> None: ...

    async def state(self, ref: TicketRef) -> TicketState: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChangeRef:
    """An approved change as a desk answers `change_covering`: its key, what humans call it, its link and
    its planned window (ms since the epoch; 0 when the desk does not say)."""

    id: str  # ServiceNow sys_id, Jira issue key
    display: str = ""  # CHG0030001
    url: str = ""
    start_ms: int = 0
    end_ms: int = 0
    summary: str = ""


class ChangeAware(Protocol):
    """The optional methods of a desk that knows its changes (change-aware tickets)."""

    async def change_covering(self, ci: str, at_ms: int) -> ChangeRef | None: ...

    async def link_change(self, ref: TicketRef, change: ChangeRef, note: str) -> None: ...


class ProblemDesk(Protocol):
    """The optional methods of a desk that keeps problem records."""

    async def open_problem(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef: ...

    async def link_problem(self, ref: TicketRef, problem: TicketRef, note: str) -> None: ...


class DeskSettings(Protocol):
    """A desk kind's config model, as a plugin registers it: a pydantic model with
    `kind: Literal["<kind>"]` (and `extra="forbid"`) that builds the desk from one mapping section."""

    kind: str

    def build(self, name: str, session: aiohttp.ClientSession) -> Desk: ...
