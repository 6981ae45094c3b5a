"""`bridge test-mapping`: what a recorded payload would do under a mapping, with no Redis and no desk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.core import plugins
from bridge.core.config import MappingConfig
from bridge.core.errors import ConfigError
from bridge.core.routing import Router
from bridge.core.source import ParseContext
from bridge.core.templates import alert_context
from bridge.delivery.ownership import open_fields


def explain(
    config: MappingConfig, source: str, payload: Path, content_type: str = "application/json"
) -> dict[str, Any]:
    """For each alert in the payload: the route matched, the incident key and the ticket fields."""
    if source not in config.sources:
        raise ConfigError(f"no source named {source!r}; configured: {', '.join(sorted(config.sources))}")
    settings = config.sources[source]
    ctx = ParseContext(source=source, received_at=datetime.now(UTC), options=settings.options)
    parsed = plugins.source(settings.kind).parse(payload.read_bytes(), content_type, {}, ctx)
    router = Router(config)
    alerts: list[dict[str, Any]] = []
    for alert in parsed.alerts:
        placements = []
        for routed in router.route(alert):
            route = routed.incidents  # its own route, or its scope's owner: whose desk and ticket fields apply
            incident = {"id": f"{routed.base}:<epoch>", "epoch": "<epoch>", "route": route.name}
            context = alert_context(alert, incident=incident, changes=[])
            placements.append(
                {
                    "route": routed.route.name,
                    **({"scope_owner": route.name} if routed.owner and routed.owner is not routed.route else {}),
                    "rule": routed.route.match or ["(matches every alert)"],
                    "desk": route.desk,
                    "incident_key": routed.key,
                    "incident": routed.base,
                    "topology_parent": routed.parent if routed.parent and not routed.is_parent else None,
                    "ticket_fields": open_fields(route, context),
                    "ownership": {name: str(o) for name, o in route.ticket.ownership.items()},
                }
            )
        alerts.append(
            {
                "identity": alert.identity,
                "name": alert.name,
                "status": alert.status.value,
                "severity": alert.severity.value,
                "resource": alert.resource,
                "routes": placements or "no route matches: this alert would be dead-lettered as unrouted",
            }
        )
    return {"alerts": alerts, "rejected": [r.reason for r in parsed.rejected]}
