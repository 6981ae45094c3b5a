"""Route policy: the lifecycle knobs, thresholds, flap detection, storm guard, topology, ticket fields
and who owns them. Part of the mapping format (bridge/core/config/), validated the same way."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bridge.core.matchers import Matcher, parse_matchers
from bridge.core.templates import compile_template

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


MAX_DURATION_S = 100 * 365 * 86400.0  # 100 years: any duration longer is a typo or an attack


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `5m`, `1h30m`, `250ms` -> seconds; at most 100 years (MAX_DURATION_S)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("duration must not be negative")
        return _bounded(float(value), value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):  # a bare number is seconds, also as text (`${VAR:-90}`)
        return _bounded(float(text), value)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {str(value)[:40]!r}: use e.g. 30s, 5m, 1h30m, 250ms")
    return _bounded(sum(float(n) * _UNITS[u] for n, u in parts), value)


def _bounded(seconds: float, value: Any) -> float:
    """Durations become milliseconds stored in Redis: a longer one would not fit (nor mean anything)."""
    if not seconds <= MAX_DURATION_S:  # also NaN and infinity
        raise ValueError(f"duration {str(value)[:40]!r} is too long: at most 100 years")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_template(value: str) -> str:
    compile_template(value)
    return value


def _check_matcher(value: str) -> str:
    parse_matchers(value)
    return value


Template = Annotated[str, BeforeValidator(lambda v: _check_template(str(v)))]
# Checked one list item at a time, so that an error points at the bad matcher's own line.
MatcherText = Annotated[str, AfterValidator(_check_matcher)]


SCOPE = r"^[A-Za-z0-9_.-]+$"


class Correlate(Strict):
    # Templates over the alert whose rendered values form the incident key. Empty: one incident
    # per alert identity.
    by: list[Template] = Field(default_factory=list)
    # Routes naming the same scope share one incident key space: an alert of any of them joins the live
    # incident its key renders to, whichever route opened it (e.g. Prometheus and Splunk alerts about
    # one database). The first route in the mapping that names the scope owns its incidents: its desk,
    # lifecycle, topology, storm guard and ticket apply to them; the others bring their alerts, each
    # with its own route's identity, notes and auto-resolve.
    scope: str | None = Field(None, pattern=SCOPE)


class Threshold(Strict):
    """Open only when this many alerts (or distinct resources) fire within the window; hold them till then."""

    count: int = Field(ge=1)
    distinct_resources: bool = False
    window: Duration = 300.0


class Flap(Strict):
    """An alert (one member) that changes state (clears, fires again) more than `changes` times within
    `window` is flapping: one note, then its changes are not noted until it has been stable for `quiet`,
    and the ticket is neither resolved nor reopened meanwhile. Members joining or leaving are no change."""

    changes: int = Field(6, ge=1)
    window: Duration = 3600.0
    quiet: Duration = 900.0


class AutoResolve(Strict):
    """Members this rule matches (all of `sources` and `match`; empty matches every one) are resolved once
    not repeated for `after`: for alerts of sources that never send a clear."""

    sources: list[str] = Field(default_factory=list)  # source names; empty = any
    match: list[MatcherText] = Field(default_factory=list)  # Alertmanager matchers, all must match
    after: Duration = Field(gt=0)

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]


class Lifecycle(Strict):
    resolve_after: Duration = 300.0  # hold-down: all members clear this long before the ticket resolves
    reopen_within: Duration = 3600.0  # fires again within this after resolving: reopen; later: new ticket
    # For sources that never send a clear (Splunk): a member not repeated for this long resolves. Per
    # member: the window is the alert's own route's (or, first, that of the first `auto_resolve` rule
    # matching it), also in an incident shared with other routes (`correlate.scope`).
    auto_resolve_after: Duration | None = None
    auto_resolve: list[AutoResolve] = Field(default_factory=list)
    threshold: Threshold | None = None
    flap: Flap | None = None
    # Raw desk states meaning "closed by a human" / "won't fix": a ticket in one of them is never
    # reopened; the next firing opens a new ticket (new epoch). Closed/cancelled always count.
    no_reopen_states: list[str] = Field(default_factory=list)


class Storm(Strict):
    """More than `max_new_per_minute` new incidents on the route within `window`: one major incident takes
    the rest until `window` passes without an incident refused. Counted exactly, across batches and
    replicas (an atomic count in Redis before the alerts are decided); with `group_by`, per group: alerts
    of another group (another site, another switch) open their own incidents as usual. A topology parent
    is never refused; with `group_by: [<the route's topology.key>]` a group's storm incident is a child of
    that key's parent like the others (held by `topology.hold`, adopted when the parent comes)."""

    max_new_per_minute: int = Field(ge=1)
    window: Duration = Field(60.0, gt=0)
    group_by: list[Template] = Field(default_factory=list)
    # Ticket fields of the major incident, over the route's own (e.g. a short_description saying
    # "Major incident: alert storm on {{ incident.route }}"); its notes list the alerts it absorbs.
    fields: dict[str, Template] = Field(default_factory=dict)


class Topology(Strict):
    """Alerts matching `parent` own the incident of their `key`; other alerts with the same key join it.

    In whatever order they come: when the parent opens, live incidents of its key that went live within
    `adopt_within` before are adopted (their members join it; their tickets are closed as duplicates of
    its ticket, or never opened). `hold` keeps a child's incident from opening its ticket for that long,
    so that a parent arriving meanwhile adopts it before any ticket exists."""

    parent: list[MatcherText] = Field(min_length=1)
    key: Template
    adopt_within: Duration = 600.0  # 0: a parent takes only what comes while it is open
    hold: Duration = 0.0


class Ownership(StrEnum):
    """Who owns a ticket field after the bridge created the ticket."""

    CREATE_ONLY = "create_only"  # written on open, then the desk's humans own it
    SYNC_UNTIL_EDITED = "sync_until_edited"  # kept in step with the alerts until a human changes it
    APPEND_NOTE = "append_note"  # changes become work-note lines, the field itself is not rewritten
    NEVER = "never"  # never written (disables a field another mapping layer sets)


class Note(StrEnum):
    """What a route turns into ticket notes besides new members, clears and re-fires (`notes:`)."""

    ACKNOWLEDGEMENT = "acknowledgement"  # with its author and comment; see `ticket.acknowledge_fields`
    COMMENT = "comment"  # a comment or custom notification, another update by a human
    FLAPPING = "flapping"  # the tool's flapping start and stop
    DOWNTIME = "downtime"  # the tool's scheduled downtime start and end
    SEVERITY = "severity"  # a change of severity (and of the fields `sync_until_edited` derives from it)
    SUMMARY = "summary"  # a change of summary (off by default: many tools put live values in it)


DEFAULT_NOTES: list[Note] = [n for n in Note if n is not Note.SUMMARY]


Trigger = Literal["open", "reopen", "resolve"]


def _on_open() -> list[Trigger]:
    return ["open"]


class Automation(Strict):
    """A route's automation: a job a runner (`automation:` at the top of the mapping) starts when an
    incident of the route opens (or reopens, or resolves); its result becomes a work note."""

    runner: str
    # When: open (its ticket opened), reopen, resolve. YAML 1.1 reads a bare `on:` key as true: both work.
    on: list[Trigger] = Field(default_factory=lambda: _on_open(), min_length=1)
    job_template: str = ""  # AWX: the job template's id (or its name); EDA runners take none
    extra_vars: dict[str, Template] = Field(default_factory=dict)  # rendered over the alert and the incident
    timeout: Duration = Field(600.0, gt=0)  # follow the job this long, then note it as still running
    output_lines: int = Field(20, ge=0, le=200)  # the last lines of the job's output in the note

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and (True in data or "True" in data):  # the loader may make keys text
            data = {("on" if key in (True, "True") else key): value for key, value in data.items()}
        if isinstance(data, dict) and isinstance(data.get("on"), str):
            data = {**data, "on": [data["on"]]}
        return data


class Ticket(Strict):
    # Desk field name -> template. Rendered on open; the desk adapter adds the correlation fields.
    fields: dict[str, Template] = Field(default_factory=dict)
    ownership: dict[str, Ownership] = Field(default_factory=dict)  # field -> owner; default create_only
    resolve_note: Template = "Resolved automatically: all alerts cleared for the hold-down period."
    # Extra fields sent with the resolve (ServiceNow `close_code`, Remedy `Status_Reason`, Jira `resolution`)
    resolve_fields: dict[str, Template] = Field(default_factory=dict)
    # Fields sent with the note of an acknowledgement, e.g. ServiceNow `state: "2"` (In Progress).
    acknowledge_fields: dict[str, Template] = Field(default_factory=dict)
    flush_interval: Duration = 0.0  # changes within this become one work note (0: as they come)

    @model_validator(mode="after")
    def _owned_fields_exist(self) -> Ticket:
        unknown = set(self.ownership) - set(self.fields)
        if unknown:
            raise ValueError(f"ownership for fields without a template: {sorted(unknown)}")
        return self


class OnDeskResolve(StrEnum):
    """A person resolved (or closed) the ticket while its alerts still fire."""

    MUTE_UNTIL_CLEAR = "mute_until_clear"  # no reopen: later alerts are notes only until every member clears
    REOPEN = "reopen"  # the bridge reopens the ticket at once
    NEW_TICKET = "new_ticket"  # a new ticket (new epoch, new correlation id) opens at once for what still fires


class RouteSync(Strict):
    """What the bridge does when a person changes a ticket of this route (the loop back, `sync:` of the
    desk brings the changes in)."""

    on_desk_resolve: OnDeskResolve = OnDeskResolve.MUTE_UNTIL_CLEAR
    on_desk_assign: Literal["acknowledge", "ignore"] = "acknowledge"  # acknowledge upstream, once per ticket
    on_desk_cancel_silence: Duration = 4 * 3600.0  # a cancelled ticket silences its members this long (0: none)
    on_desk_comment: Literal["ignore", "upstream"] = "ignore"  # pass a person's comment to the tools


class DuringChange(StrEnum):
    """What an incident that opens while an approved change covers its configuration item does."""

    SUPPRESS = "suppress"  # no ticket while the change's window lasts (recorded, audited with the change)
    ANNOTATE = "annotate"  # the ticket opens, linked to the change (ServiceNow `caused_by`, a Jira issue link)


class ChangeCheck(Strict):
    """Before a ticket opens, ask the desk for an approved change whose planned window covers now on the
    alert's configuration item (`ci`, a template over the alert and incident). A desk that cannot be asked
    (error, timeout, breaker open) fails open: the ticket opens, and the audit trail says the check failed.

    With `suppress`, the open waits until the change's window ends (asked again every `cache_ttl`, so a
    change closed early ends it too): if the incident still fires then, its ticket opens, with what
    happened meanwhile; if it has cleared, no ticket opens at all."""

    ci: Template  # e.g. "{{ labels.host }}"; renders empty: no check
    during_change: DuringChange = DuringChange.ANNOTATE
    # How long a desk's answer for one CI is kept (shared by the replicas, in Redis); at most an hour.
    cache_ttl: Duration = Field(300.0, gt=0, le=3600)


class ProblemRecord(Strict):
    """An incident key (the route and its correlation key, across epochs) that opens `after` tickets
    within `within` opens one problem record (ServiceNow `problem`, a Jira issue of the desk's problem
    type), once per window across replicas; that ticket and every later one of the key within the
    window are linked to it (ServiceNow `problem_id`, a Jira issue link) and noted with it."""

    after: int = Field(ge=2, le=1000)
    within: Duration = Field(86400.0, gt=0)
    # Problem fields by the desk's names, templates over the alert, the incident and `problem` (count,
    # tickets: the displays of the tickets that made it). Empty: the desk's default summary.
    fields: dict[str, Template] = Field(default_factory=dict)
