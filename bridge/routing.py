"""Routes an alert: which routes match, its identity under each, and the incident it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import MappingConfig, Route
from bridge.matchers import Matcher, matches_all
from bridge.models import Alert, stable_hash
from bridge.templates import alert_context, render


@dataclass(frozen=True, slots=True)
class Routed:
    route: Route
    identity: str
    key: str  # the rendered correlation key, for humans
    base: str  # "<route>:<hash(key)>": the incident, without its epoch


class Router:
    """First matching route wins, unless it says `continue: true`."""

    def __init__(self, config: MappingConfig) -> None:
        self.config = config
        self._routes: list[tuple[Route, list[Matcher]]] = [(r, r.matchers()) for r in config.routes]

    def route(self, alert: Alert) -> list[Routed]:
        labels = match_labels(alert)
        out: list[Routed] = []
        for route, matchers in self._routes:
            if route.sources and alert.source not in route.sources:
                continue
            if not matches_all(matchers, labels):
                continue
            out.append(self.place(route, alert))
            if not route.continue_:
                break
        return out

    def place(self, route: Route, alert: Alert) -> Routed:
        identity = alert.identity
        if route.identity:
            identity = stable_hash([alert.field(f) for f in route.identity])
        if route.correlate.by:
            context = alert_context(alert, identity=identity)
            key = "|".join(render(t, context) for t in route.correlate.by)
        else:
            key = f"{alert.source}|{identity}"
        return Routed(route, identity, key, f"{route.name}:{stable_hash(key, length=12)}")


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
