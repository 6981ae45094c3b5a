"""Prometheus Alertmanager webhook (version 4): one group of alerts per request.

Format: https://github.com/prometheus/alertmanager, notify/webhook/webhook.go (`Message`) and
template/template.go (`Data`, `Alert`); https://prometheus.io/docs/alerting/latest/configuration/#webhook_config.
Newer Alertmanagers add keys without bumping the version, so unknown keys are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Moment, Severity, Status
from bridge.core.source import ParseContext, Parsed, Rejected, SourceAdapter

# The `severity` label is free text in the Prometheus world; these are the spellings seen in the
# kube-prometheus, node-exporter and Grafana mixins. Anything else falls back to `warning`.
SEVERITY_LABELS: Mapping[str, Severity] = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "p1": Severity.CRITICAL,
    "high": Severity.MAJOR,
    "major": Severity.MAJOR,
    "error": Severity.MAJOR,
    "p2": Severity.MAJOR,
    "medium": Severity.MINOR,
    "minor": Severity.MINOR,
    "p3": Severity.MINOR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "p4": Severity.WARNING,
    "low": Severity.INFO,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "none": Severity.INFO,
    "p5": Severity.INFO,
}

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: still firing (alert/alert.go hides a future end)
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint: FNV-1a-64 over the sorted labels, 0xff-separated, as %016x."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


class _AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Status = Field(...)
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Moment
    endsAt: Moment | None = None
    generatorURL: str = ""
    fingerprint: str = ""

    @field_validator("endsAt", mode="before")
    @classmethod
    def _zero_is_open(cls, value: Any) -> Any:
        return None if value in (_GO_ZERO_TIME, "", None) else value

    @field_validator("status", mode="before")
    @classmethod
    def _only_firing_or_resolved(cls, value: Any) -> Any:
        if value not in ("firing", "resolved"):
            raise ValueError("must be 'firing' or 'resolved'")
        return value


class _AmEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    alerts: list[Any]
    groupKey: str = ""
    externalURL: str = ""
    receiver: str = ""
    truncatedAlerts: int = 0


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("body must be a JSON object with an 'alerts' list")
    try:
        env = _AmEnvelope.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(describe(exc)) from exc
    if env.version != "4":
        raise PayloadError(f"version: expected '4' (Alertmanager webhook), got {env.version!r}")
    out = Parsed()
    for index, raw in enumerate(env.alerts):
        try:
            out.alerts.append(_to_alert(_AmAlert.model_validate(raw), env, ctx))
        except ValidationError as exc:
            out.rejected.append(Rejected(describe(exc, at=f"alerts[{index}]"), raw))
    return out


def _to_alert(am: _AmAlert, env: _AmEnvelope, ctx: ParseContext) -> Alert:
    labels = am.labels
    links = [link for link in (am.generatorURL, am.annotations.get("runbook_url", "")) if link]
    return Alert(
        source=ctx.source,
        kind="alertmanager",
        identity=am.fingerprint or fingerprint(labels),
        name=labels.get("alertname", ""),
        resource=labels.get("instance") or labels.get("pod") or labels.get("service") or "",
        severity=SEVERITY_LABELS.get(labels.get("severity", "").lower(), Severity.WARNING),
        status=am.status,
        summary=am.annotations.get("summary", "") or labels.get("alertname", ""),
        description=am.annotations.get("description", "") or am.annotations.get("message", ""),
        labels=labels,
        annotations=am.annotations,
        starts_at=am.startsAt,
        ends_at=am.endsAt,
        links=links,
        received_at=ctx.received_at,
        raw={"groupKey": env.groupKey, "externalURL": env.externalURL, "receiver": env.receiver},
    )


def describe(exc: ValidationError, *, at: str = "") -> str:
    """The first validation problem as `field.path: message`, for a 400 the sender can act on.

    `at` is where the validated value sits in the payload (`alerts[3]`), so the path reads
    `alerts[3].labels` rather than a bare `labels` that the sender cannot place.
    """
    first = exc.errors()[0]
    where = at + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    return f"{where.lstrip('.') or 'body'}: {first['msg'].removeprefix('Value error, ')}"


ADAPTER = SourceAdapter(kind="alertmanager", parse=parse)
