"""Routes an alert: which routes match, its identity under each, and the incident it belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.core.config import MappingConfig, Route
from bridge.core.matchers import Matcher, matches_all, parse_matchers
from bridge.core.models import Alert, stable_hash
from bridge.core.policy import Note
from bridge.core.templates import alert_context, render


@dataclass(slots=True)  # not frozen: made per alert, and a frozen __init__ is slower
class Routed:
    route: Route
    identity: str
    key: str  # the rendered correlation key, for humans
    base: str  # "<route id>:<hash(key)>": the incident, without its epoch (of the scope's owner, if any)
    parent: str | None = None  # topology: the parent incident this alert joins while it is live
    is_parent: bool = False
    storm: str | None = None  # the storm incident of the alert's storm group, when its incidents' route has a guard
    auto_ms: int = 0  # the member's auto-resolve window (ms), 0 for none
    owner: Route | None = None  # the route whose incidents these are: the scope's owner (None: `route` itself)
    live: bool = False  # placement found the alert's own incident live, and left it there
    # The storm's groups are the topology keys (`storm.group_by: [<topology.key>]`): a storm incident
    # holds the children of one parent, and is a child of that parent too (held, adopted).
    storm_child: bool = False

    @property
    def incidents(self) -> Route:
        """The route whose policy the alert's incidents follow: its own, or its scope's owner."""
        return self.owner or self.route

    @property
    def storm_group(self) -> str:
        """The storm group's key: '' for the route's single group."""
        return self.storm.split(":", 1)[1].removeprefix(STORM) if self.storm else ""


STORM = "storm"


def storm_base(route: str, group: str = "") -> str:
    """The major incident of a route's storm (of one `storm.group_by` group: `group` its hash)."""
    return f"{route}:{STORM}" + (f"-{group}" if group else "")


def is_storm_base(base: str, route: str) -> bool:
    return base == storm_base(route) or base.startswith(storm_base(route) + "-")


HEARTBEAT_KIND = "heartbeat"  # the kind of the alerts a heartbeat that expires (and pings again) makes


class Router:
    """First matching route wins, unless it says `continue: true`."""

    def __init__(self, config: MappingConfig, *, retention_ms: int = 7 * 86_400_000, audit_cap: int = 200) -> None:
        self.config = config
        self.owners = scope_owners(config)  # route id -> the route owning its incidents, for scoped routes

        def parents(r: Route) -> list[Matcher]:
            owner = self.owners.get(r.id, r)
            return [m for t in owner.topology.parent for m in parse_matchers(t)] if owner.topology else []

        self._routes: list[tuple[Route, list[Matcher], list[Matcher]]] = [
            (r, r.matchers(), parents(r)) for r in config.routes
        ]
        self._auto = {r.id: [(rule, rule.matchers()) for rule in r.lifecycle.auto_resolve] for r in config.routes}
        self.policies = {r.id: policy_json(r, retention_ms, audit_cap) for r in config.routes}  # by route id
        self._heartbeats = config.heartbeat_routes  # heartbeat name -> its route
        for beat in self._heartbeats.values():
            self.policies.setdefault(beat.id, policy_json(beat, retention_ms, audit_cap))
        # RE2 instructions of every regex an alert may meet here: with the values' length, the bound on
        # the work of routing it (the engine matches a batch off the event loop when that is large).
        self.regex_size = sum(m.pattern.size for _, own, up in self._routes for m in own + up if m.pattern is not None)

    def route(self, alert: Alert, data: dict[str, Any] | None = None) -> list[Routed]:
        """The routes `alert` takes; `data` is the alert as JSON (the intake entry, parsed), if at hand."""
        if alert.kind == HEARTBEAT_KIND:  # a heartbeat's own alert: to its route, one incident per heartbeat
            route = self._heartbeats.get(alert.labels.get("heartbeat", ""))
            key = f"heartbeat|{alert.identity}"
            return [Routed(route, alert.identity, key, f"{route.id}:{stable_hash(key, length=12)}")] if route else []
        labels = match_labels(alert)
        out: list[Routed] = []
        for route, matchers, parent in self._routes:
            if route.sources and alert.source not in route.sources:
                continue
            if not matches_all(matchers, labels):
                continue
            out.append(self.place(route, alert, is_parent=bool(parent) and matches_all(parent, labels), data=data))
            if not route.continue_:
                break
        return out

    def place(
        self, route: Route, alert: Alert, *, is_parent: bool = False, data: dict[str, Any] | None = None
    ) -> Routed:
        identity = alert.identity
        if route.identity:
            identity = field_identity(alert, route.identity)
        context = alert_context(alert if data is None else data, identity=identity)
        if route.correlate.by and route.tickets == "per_group":
            key = "|".join(render(t, context) for t in route.correlate.by)
        else:
            key = f"{alert.source}|{identity}"
        owner = self.owners.get(route.id)
        incidents = owner or route
        storm = None
        if incidents.storm:
            group = incidents.storm.group_by
            group_hash = stable_hash([render(t, context) for t in group], length=12) if group else ""
            storm = storm_base(incidents.id, group_hash)
        auto_ms = self._auto_ms(route, alert)
        parent, storm_child = None, False
        if incidents.topology:
            storm_child = bool(incidents.storm and incidents.storm.group_by == [incidents.topology.key])
            topology_key = render(incidents.topology.key, context)
            parent = f"{incidents.id}:{stable_hash('topology|' + topology_key, length=12)}"
            if is_parent:
                return Routed(route, identity, key, parent, None, True, storm, auto_ms, owner)
        base = f"{incidents.id}:{stable_hash(key, length=12)}"
        return Routed(route, identity, key, base, parent, False, storm, auto_ms, owner, storm_child=storm_child)

    def _auto_ms(self, route: Route, alert: Alert) -> int:
        """The member's auto-resolve window: the first of its route's `auto_resolve` rules that matches
        it, else the route's `auto_resolve_after`; 0 for none."""
        rules = self._auto.get(route.id)
        if rules:
            labels = match_labels(alert)
            for rule, matchers in rules:
                if (not rule.sources or alert.source in rule.sources) and matches_all(matchers, labels):
                    return int(rule.after * 1000)
        after = route.lifecycle.auto_resolve_after
        return int(after * 1000) if after else 0


def field_identity(alert: Alert, fields: Sequence[str]) -> str:
    """The identity a route's `identity:` fields give an alert (its member in the incident)."""
    return stable_hash([alert.field(f) for f in fields])


def scope_owners(config: MappingConfig) -> dict[str, Route]:
    """Route id -> the route owning its incidents (the first route naming its `correlate.scope`), for
    every route with a scope, the owner included."""
    first: dict[str, Route] = {}
    out: dict[str, Route] = {}
    for route in config.routes:
        scope = route.correlate.scope
        if scope:
            out[route.id] = first.setdefault(scope, route)
    return out


def policy_json(route: Route, retention_ms: int, audit_cap: int) -> bytes:
    """The route's lifecycle policy as apply_alert.lua and fire_timer.lua read it (times in ms)."""
    life = route.lifecycle

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    policy: dict[str, Any] = {
        "resolve_after": ms(life.resolve_after),
        "reopen_within": ms(life.reopen_within),
        "retention": retention_ms + ms(life.reopen_within),
        "audit_cap": audit_cap,
        # What an incident records when it opens a ticket: the desk it goes to, and the route's settings
        # as they are (bridge.runtime.routebook), should the route leave the mapping.
        "desk": route.desk,
        "settings": settings_hash(route),
    }
    # The changes the Lua step sees for itself that the route does not note (follow-ups are marked
    # by the engine, `follow_up`, only when the route notes them).
    quiet = [n.value for n in (Note.SEVERITY, Note.ACKNOWLEDGEMENT) if n not in route.notes]
    if quiet:
        policy["quiet"] = dict.fromkeys(quiet, True)
    if life.auto_resolve_after:
        policy["auto_resolve_after"] = ms(life.auto_resolve_after)
    if life.threshold:
        t = life.threshold
        policy["threshold"] = {"count": t.count, "distinct": t.distinct_resources, "window": ms(t.window)}
    if route.topology and route.topology.hold:
        policy["hold"] = ms(route.topology.hold)
    sync = route.sync
    policy["sync"] = {
        "resolve": sync.on_desk_resolve.value,
        "assign": sync.on_desk_assign,
        "cancel_silence": ms(sync.on_desk_cancel_silence),
        "comment": sync.on_desk_comment,
    }
    if life.flap:
        policy["flap"] = {
            "changes": life.flap.changes,
            "window": ms(life.flap.window),
            "quiet": ms(life.flap.quiet),
        }
    return orjson.dumps(policy)


@dataclass(frozen=True, slots=True)
class Mark:
    """A follow-up the route notes, as the Lua step takes it: a short hash that tells it from the
    member's earlier ones, what it is (acknowledgement, ..., summary) and the note's text; all ""
    when there is nothing to note. `event` says the alert is a follow-up, noted or not: the status
    change it comes with (an acknowledgement's, a downtime's) is then no news of its own."""

    mark: str = ""
    kind: str = ""
    text: str = ""
    event: bool = False


NO_MARK = Mark()


def follow_up(route: Route, alert: Alert) -> Mark:
    """The alert's follow-up (`alert.event`) where the route's `notes:` take it, and its summary where
    they take `summary`."""
    event = alert.event
    noted = event is not None and event.kind.note in route.notes
    summary = Note.SUMMARY in route.notes and bool(alert.summary)
    if not (noted or summary):
        return Mark(event=True) if event is not None else NO_MARK
    parts: list[Any] = []
    kind = text = ""
    if event is not None and noted:
        parts.append([event.kind.value, event.author, event.comment, event.at.isoformat() if event.at else ""])
        kind, text = event.kind.value, event.text()
    if summary:
        parts.append(alert.summary)
        kind, text = kind or Note.SUMMARY.value, text or f"summary: {alert.summary}"
    return Mark(stable_hash(parts, version="mark", length=8), kind, text, event is not None)


def settings_hash(route: Route) -> str:
    """The hash of a route's settings: which version of its route an incident was opened under."""
    return stable_hash(route.model_dump(mode="json", by_alias=True), version="route", length=12)


@dataclass(slots=True)
class Retired:
    """A route that left the mapping while incidents of it were live, as Redis remembers it: the
    settings each of its versions had (by `settings_hash`), its last ones, and its last policy JSON."""

    id: str
    latest: str
    versions: dict[str, Route]
    policy: bytes
    live: int = 0  # its live incidents, as last counted

    def route(self, settings: str = "") -> Route:
        """The route as an incident opened under `settings` knew it, else as it last was."""
        return self.versions.get(settings) or self.versions[self.latest]


def match_labels(alert: Alert) -> dict[str, str]:
    """What matchers see: the alert's labels, plus its normalised fields where no label has the name."""
    fields = {
        "source": alert.source,
        "kind": alert.kind,
        "alertname": alert.name,
        "resource": alert.resource,
        "severity": alert.severity.value,
        "status": alert.status.value,
    }
    return {**fields, **alert.labels}
