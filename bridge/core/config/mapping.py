"""The mapping format ops teams write, as pydantic models, and the rules that span its sections.

Sources, desks, rate limits, the loop back (`sync`), routes, heartbeats and runners, each validated whole
(extra="forbid"). Its parts with a concept of their own live beside it: the registered desk and runner kinds
(`registered`), heartbeats (`heartbeats`) and the names used but not defined (`references`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.core import plugins
from bridge.core.config.heartbeats import NAME, Heartbeat
from bridge.core.config.references import misreference, misreferences, unknown
from bridge.core.config.registered import DeskConfig, RunnerConfig
from bridge.core.matchers import Matcher, parse_matchers
from bridge.core.policy import (
    DEFAULT_NOTES,
    Automation,
    ChangeCheck,
    Correlate,
    Duration,
    Lifecycle,
    MatcherText,
    Note,
    ProblemRecord,
    RouteSync,
    Storm,
    Strict,
    Ticket,
    Topology,
)
from bridge.core.secrets import configured


class SourceConfig(Strict):
    kind: str
    # Bearer token (Alertmanager, generic), HMAC secret (Grafana, Splunk Observability) or URL token
    # (Splunk Enterprise), by kind. Empty: the source is open and start-up logs a warning.
    secret: SecretStr | None = None
    max_body: int = Field(1 << 20, gt=0, description="bytes; larger bodies get 413")
    options: dict[str, Any] = Field(default_factory=dict)
    # How the loop back acknowledges this source's alerts in the tool (the upstream plugin named by the
    # source's kind validates it: entry-point group alert_ticket_bridge.upstreams); none: not acknowledged.
    upstream: dict[str, Any] | None = None
    _upstream: Any = PrivateAttr(default=None)  # the validated settings

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        known = plugins.sources()
        if kind not in known:
            raise ValueError(unknown("source kind", kind, known) + f" (known: {', '.join(sorted(known))})")
        return kind

    @model_validator(mode="after")
    def _valid_options(self) -> SourceConfig:
        model = plugins.sources()[self.kind].options
        if model is not None:
            try:
                model.model_validate(self.options)
            except ValidationError as exc:  # each error at its own key, under `options`
                details: list[Any] = [{**e, "loc": ("options", *e["loc"])} for e in exc.errors()]
                raise ValidationError.from_exception_data(exc.title, details) from None
        elif self.options:
            raise ValueError(f"source kind {self.kind!r} takes no options")
        return self

    @model_validator(mode="after")
    def _valid_upstream(self) -> SourceConfig:
        if self.upstream is None:
            return self
        model = plugins.upstreams().get(self.kind)
        if model is None:
            raise PydanticCustomError(
                "no_upstream",
                "{message}",
                {"message": f"source kind {self.kind!r} has no upstream plugin: nothing can acknowledge its alerts",
                 "at": ("upstream",)},
            )  # fmt: skip
        try:
            self._upstream = model.model_validate(self.upstream)
        except ValidationError as exc:  # each error at its own key, under `upstream`
            details: list[Any] = [{**e, "loc": ("upstream", *e["loc"])} for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, details) from None
        return self

    def upstream_settings(self) -> Any:
        """The validated upstream settings (bridge.core.sync.UpstreamSettings), or None."""
        return self._upstream

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class Route(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # What incidents know the route by (`<id>:<key hash>:<epoch>`); default: its name. A route renamed
    # with its old name as `id` keeps its open incidents and their tickets.
    id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$")
    match: list[MatcherText] = Field(default_factory=list)  # Alertmanager matchers, all must match
    sources: list[str] = Field(default_factory=list)  # source names; empty = any
    desk: str
    # A job a runner starts when an incident opens (reopens, resolves); its result is a work note.
    automation: Automation | None = None
    continue_: bool = Field(False, alias="continue")
    identity: list[str] | None = None  # alert fields (`name`, `labels.host`) replacing the source's identity
    correlate: Correlate = Correlate()
    tickets: Literal["per_group", "per_alert"] = "per_group"  # per_alert ignores correlate.by
    topology: Topology | None = None
    storm: Storm | None = None
    lifecycle: Lifecycle = Lifecycle()
    ticket: Ticket = Ticket()
    change: ChangeCheck | None = None  # look up an approved change on the alert's CI before opening
    problem: ProblemRecord | None = None  # a key that keeps opening tickets opens a problem record
    # Which follow-ups become ticket notes (identical repeats never do); default all but `summary`.
    notes: list[Note] = Field(default_factory=lambda: list(DEFAULT_NOTES))
    sync: RouteSync = RouteSync()  # what a person's change of the ticket does (the loop back)

    @model_validator(mode="before")
    @classmethod
    def _id_is_the_name_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("id") and isinstance(data.get("name"), str):
            return {**data, "id": data["name"]}
        return data

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]

    @model_validator(mode="after")
    def _hold_without_threshold(self) -> Route:
        if self.topology and self.topology.hold and self.lifecycle.threshold:
            raise PydanticCustomError(
                "hold_and_threshold",
                "{message}",
                {
                    "message": "topology.hold and lifecycle.threshold cannot go together: a held incident opens "
                    "when its hold ends, a threshold's when enough alerts came",
                    "at": ("topology", "hold"),
                },
            )
        return self


class DeskLimit(Strict):
    """A rate limit shared by every replica (a token bucket in Redis), for desks that throttle."""

    per_second: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class DeskSync(Strict):
    """The loop back of one desk: how the desk's human changes reach the bridge (`sync:` by desk name)."""

    poll: Duration | None = Field(None, gt=0)  # ask the desk for changes this often (one replica does)
    # Pushes to POST /desk-events/<desk>: `Authorization: Bearer <secret>`, or (auth: hmac) a hex
    # HMAC-SHA256 of the body with it in `header`. Empty: pushes are refused unless the bridge runs
    # with --allow-unauthenticated.
    secret: SecretStr | None = None
    auth: Literal["bearer", "hmac"] = "bearer"
    header: str = "X-Bridge-Signature"  # the HMAC's header (auth: hmac); `sha256=` before the hex is allowed
    max_body: int = Field(1 << 20, gt=0, description="bytes; larger pushes get 413")
    integration_user: str = ""  # the desk user the bridge writes as: its changes are the bridge's own

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""


class MappingConfig(Strict):
    model_config = ConfigDict(defer_build=True)  # the desk kinds come from the registry, on first use

    sources: dict[str, SourceConfig]
    desks: dict[str, DeskConfig]
    limits: dict[str, DeskLimit] = Field(default_factory=dict)  # desk name -> shared rate limit
    sync: dict[str, DeskSync] = Field(default_factory=dict)  # desk name -> its loop back (pushed, polled)
    routes: list[Route] = Field(min_length=1)
    heartbeats: dict[str, Heartbeat] = Field(default_factory=dict)  # name -> heartbeat
    _from_env: frozenset[str] = PrivateAttr(default=frozenset())  # set by `load`: see `secrets`

    @model_validator(mode="after")
    def _references(self) -> MappingConfig:
        routes = [{"name": r.name, "desk": r.desk, "sources": r.sources} for r in self.routes]
        beats = {n: b.model_dump(include={"desk", "route", "alerts"}) for n, b in self.heartbeats.items()}
        found = misreferences(
            {
                "sources": self.sources,
                "desks": self.desks,
                "limits": self.limits,
                "sync": self.sync,
                "routes": routes,
                "heartbeats": beats,
            }
        )
        if found:
            message, at = found[0]
            raise misreference(message, at)
        return self

    @model_validator(mode="after")
    def _ids_unique(self) -> MappingConfig:
        seen: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            first = seen.setdefault(route.id, index)
            if first != index and not (route.id == route.name == self.routes[first].name):  # (a name used twice)
                message = f"route id {route.id!r} is used twice (routes {self.routes[first].name!r} and {route.name!r})"
                raise PydanticCustomError(
                    "duplicate_route_id", "{message}", {"message": message, "at": ("routes", index, "id")}
                )
        return self

    @model_validator(mode="after")
    def _scopes(self) -> MappingConfig:
        """Routes sharing a `correlate.scope` share its owner's incidents: the others go to the same desk
        and leave the incidents' policy (topology, storm, threshold, flap) to the owner."""
        owners: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            scope = route.correlate.scope
            if not scope:
                continue
            first = owners.setdefault(scope, index)
            owner = self.routes[first]
            message, at = "", ("routes", index)  # type: tuple[str, tuple[str | int, ...]]
            if first == index:
                continue
            if route.desk != owner.desk:
                message, at = f"its desk must be {owner.desk!r}, the desk of the scope's owner", (*at, "desk")
            else:
                kept = [k for k in ("topology", "storm") if getattr(route, k) is not None]
                kept += [f"lifecycle.{k}" for k in ("threshold", "flap") if getattr(route.lifecycle, k) is not None]
                if kept:
                    message = f"{', '.join(kept)}: set on {owner.name!r}, which owns the scope's incidents"
            if message:
                text = f"route {route.name!r} shares scope {scope!r} with route {owner.name!r}: {message}"
                raise PydanticCustomError("scope", "{message}", {"message": text, "at": at})
        for index, route in enumerate(self.routes):
            for item, rule in enumerate(route.lifecycle.auto_resolve):
                for n, source in enumerate(rule.sources):
                    if source not in self.sources:
                        text = f"route {route.name!r}: " + unknown("source", source, self.sources)
                        where = ("routes", index, "lifecycle", "auto_resolve", item, "sources", n)
                        raise PydanticCustomError("unknown_source", "{message}", {"message": text, "at": where})
        return self

    def secrets(self) -> set[str]:
        """Every secret of the mapping (bridge.core.secrets.configured): the values that dead letters, the
        audit trail, the admin API and the log mask."""
        models: list[Any] = [*self.sources.values(), *self.desks.values(), *self.heartbeats.values()]
        models += self.sync.values()
        models += [s.upstream_settings() for s in self.sources.values() if s.upstream_settings() is not None]
        return configured([*models, *self.automation.values()], self._from_env)

    @model_validator(mode="after")
    def _heartbeat_names(self) -> MappingConfig:
        ids = {r.id for r in self.routes}
        for name, beat in self.heartbeats.items():
            message = ""
            if not re.fullmatch(NAME, name):
                message = "its name may hold letters, digits, '.', '_' and '-' only (it is in URLs)"
            elif beat.desk is not None and f"heartbeat.{name}" in ids:
                message = f"route id 'heartbeat.{name}' is this heartbeat's own: give that route another"
            if message:
                context = {"message": f"heartbeat {name!r}: {message}", "at": ("heartbeats", name)}
                raise PydanticCustomError("heartbeat_name", "{message}", context)
        return self

    @cached_property
    def heartbeat_routes(self) -> Mapping[str, Route]:
        """Heartbeat name -> the route its alert takes: the one it names, or, for a heartbeat with a desk,
        a route of its own (`heartbeat.<name>`: resolved as soon as it pings again, reopened within the hour)."""
        out: dict[str, Route] = {}
        for name, beat in self.heartbeats.items():
            if beat.route is not None:
                out[name] = next(r for r in self.routes if r.name == beat.route)
            else:
                own = {"name": f"heartbeat.{name}", "desk": beat.desk, "ticket": beat.ticket or Ticket()}
                out[name] = Route.model_validate({**own, "lifecycle": Lifecycle(resolve_after=0)})
        return out

    # Automation runners by name (AWX, Event-Driven Ansible): routes name them in `automation.runner`.
    automation: dict[str, RunnerConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _runners(self) -> MappingConfig:
        for index, route in enumerate(self.routes):
            if route.automation is None:
                continue
            name = route.automation.runner
            runner = self.automation.get(name)
            message, at = "", ("routes", index, "automation", "runner")  # type: tuple[str, tuple[str | int, ...]]
            if runner is None:
                message = unknown("runner", name, list(self.automation))
            elif runner.kind == "awx" and not route.automation.job_template:
                message, at = f"runner {name!r} is AWX: name the job template to launch", (*at[:-1], "job_template")
            if message:
                text = f"route {route.name!r}: {message}"
                raise PydanticCustomError("unknown_runner", "{message}", {"message": text, "at": at})
        return self

    def route(self, name: str) -> Route | None:
        """The route of that name, if in the mapping."""
        return next((r for r in self.routes if r.name == name), None)

    def by_id(self, route_id: str) -> Route | None:
        """The route of that id (incidents and their outboxes name their route by it), if in the mapping;
        a heartbeat's own route too."""
        found = next((r for r in self.routes if r.id == route_id), None)
        return found or next((r for r in self.heartbeat_routes.values() if r.id == route_id), None)
