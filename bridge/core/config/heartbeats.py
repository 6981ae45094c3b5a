"""The mapping's heartbeats: what must ping the bridge, how often, and where the ticket goes when it stops."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from bridge.core.matchers import Matcher, parse_matchers
from bridge.core.models import Severity
from bridge.core.policy import Duration, MatcherText, Strict, Ticket

NAME = r"^[A-Za-z0-9_.-]+$"  # names that go into URLs and Redis keys: heartbeats


class HeartbeatAlerts(Strict):
    """Alerts that are a heartbeat's pings rather than alerts: an always-firing alert such as Prometheus's
    `Watchdog` stops arriving when the pipeline that sends it dies."""

    match: list[MatcherText] = Field(default_factory=lambda: ['alertname="Watchdog"'])  # all must match
    sources: list[str] = Field(default_factory=list)  # source names; empty = any

    def matchers(self) -> list[Matcher]:
        return [m for text in self.match for m in parse_matchers(text)]


class Heartbeat(Strict):
    """Something that must ping the bridge at least every `interval` (+ `grace`); when it does not, one
    ticket opens ("no heartbeat from prod-eu since 10:42"), and the next ping resolves it. Pinged by
    `POST|GET /heartbeat/<name>`, Opsgenie's `/opsgenie/<source>/v2/heartbeats/<name>/ping`, and the alerts
    `alerts` matches. Watched from its first ping; `key` labels tell pingers apart (one heartbeat each)."""

    interval: Duration = Field(gt=0)
    grace: Duration = 60.0  # more than the interval before it counts as missing
    desk: str | None = None  # the desk its ticket goes to, with `ticket` (fields, resolve note) ...
    route: str | None = None  # ... or a route: its desk, lifecycle and ticket fields take the heartbeat's alert
    ticket: Ticket | None = None
    severity: Severity = Severity.CRITICAL
    secret: SecretStr | None = None  # `Authorization: Bearer <secret>` on /heartbeat/<name>; empty: open
    key: list[str] = Field(default_factory=list)  # label names (query parameters on /heartbeat/<name>)
    alerts: HeartbeatAlerts | None = None  # alerts that ping it (default matcher: alertname="Watchdog")
    max_keys: int = Field(100, ge=1)  # distinct `key` label sets kept; pings of more are refused

    @model_validator(mode="after")
    def _desk_or_route(self) -> Heartbeat:
        if (self.desk is None) == (self.route is None):
            raise ValueError("a heartbeat needs either `desk` (with its `ticket`) or `route`")
        if self.route is not None and self.ticket is not None:
            raise ValueError("`ticket` goes with `desk`: with `route`, the route's ticket fields are used")
        return self

    def window_ms(self) -> int:
        """How long after a ping it expires (interval + grace), in ms."""
        return int((self.interval + self.grace) * 1000)

    def secret_value(self) -> str:
        return self.secret.get_secret_value() if self.secret else ""
