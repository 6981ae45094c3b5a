"""The mapping ops teams write: its models (`mapping`, with `registered` desk and runner kinds and
`heartbeats`), the names it uses but does not define (`references`) and how files of it are read (`loading`).

Validated whole at start-up (pydantic, extra="forbid"); every error names file, key path and line.
Secrets come from `${VAR}` (or `${VAR:-default}`) and `<secret>_file:` keys, never from the YAML.
"""

from bridge.core.config.heartbeats import Heartbeat, HeartbeatAlerts
from bridge.core.config.loading import SECRET_KEYS, SECTIONS, load, redis_url, tuning
from bridge.core.config.mapping import DeskLimit, MappingConfig, Route, SourceConfig
from bridge.core.config.references import misreferences, unknown
from bridge.core.config.registered import DeskConfig
from bridge.core.policy import Duration, Ownership, parse_duration

__all__ = [
    "SECRET_KEYS", "SECTIONS", "DeskConfig", "DeskLimit", "Duration", "Heartbeat", "HeartbeatAlerts", "MappingConfig",
    "Ownership", "Route", "SourceConfig", "load", "misreferences", "parse_duration", "redis_url", "tuning", "unknown",
]  # fmt: skip
