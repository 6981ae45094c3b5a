"""Splunk Enterprise / Splunk Cloud built-in "Webhook" alert action: one triggered alert per request.

Format: the stock alert_webhook/bin/webhook.py posts {sid, search_name, app, owner, results_link, result}
where `result` is the first result row (Splunk docs, "Use a webhook alert action":
https://help.splunk.com/splunk-enterprise/alert-and-respond/alerting-manual/9.4/configure-alert-actions/use-a-webhook-alert-action).
There is no status, no severity and no resolve: every request means "triggered", and the incident closes
by the route's `auto_resolve_after`. Severity and identity come from result fields the search itself
computes (`| eval severity="high", alert_key=host."|".Name`). The action cannot send headers, so the only
authentication is a token in the URL (`?token=`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.sources import lenient
from adapters.sources.alertmanager import SEVERITY_LABELS, describe
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status, stable_hash
from bridge.core.source import ParseContext, Parsed, SourceAdapter

# Splunk's alert severities by number (savedsearches.conf alert.severity: 1 debug … 6 fatal) and by
# the names the UI shows (Info, Low, Medium, High, Critical), over the Prometheus spellings.
SEVERITIES: Mapping[str, Severity] = {
    **SEVERITY_LABELS,
    "fatal": Severity.CRITICAL,
    "severe": Severity.CRITICAL,
    "6": Severity.CRITICAL,
    "5": Severity.CRITICAL,
    "error": Severity.MAJOR,
    "4": Severity.MAJOR,
    "warn": Severity.WARNING,
    "3": Severity.WARNING,
    "low": Severity.WARNING,
    "debug": Severity.INFO,
    "2": Severity.INFO,
    "1": Severity.INFO,
}
_MAX_LABELS = 64  # a raw event row can carry hundreds of extracted fields; routes need a few


class SplunkOptions(BaseModel):
    """Which result fields give an alert its identity, resource, severity and summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Result fields that, with the search name, identify one problem; absent ones are skipped.
    identity_fields: list[str] = Field(default_factory=lambda: ["alert_key", "host"])
    resource_field: str = "host"
    severity_field: str = "severity"
    summary_field: str | None = None  # None: "<search name> on <resource>"
    severities: dict[str, Severity] = Field(default_factory=dict)  # value → severity, over SEVERITIES

    @field_validator("severities")
    @classmethod
    def _lower(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {key.lower(): severity for key, severity in value.items()}


class _Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sid: str = ""
    search_name: str | None = None
    app: str = ""
    owner: str = ""
    results_link: str = ""
    result: dict[str, Any] | None = None


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(SplunkOptions, ctx.options, ctx.source)
    doc = lenient.load_json(body)
    if not isinstance(doc, dict):
        raise PayloadError("body must be a JSON object (Splunk webhook: sid, search_name, result)")
    try:
        hook = _Webhook.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(describe(exc)) from exc
    name = lenient.text(hook.search_name)
    if not name:
        raise PayloadError("search_name is empty: only saved searches (alerts) can post to the bridge")
    result = {key: _field(value) for key, value in (hook.result or {}).items()}
    keys = [[field, result[field]] for field in opts.identity_fields if result.get(field)]
    resource = result.get(opts.resource_field, "")
    raw_severity = result.get(opts.severity_field, "").lower()
    severity = opts.severities.get(raw_severity) or SEVERITIES.get(raw_severity, Severity.WARNING)
    summary = result.get(opts.summary_field, "") if opts.summary_field else ""
    labels = {
        key: value for key, value in sorted(result.items()) if not key.startswith("_") and value and len(value) <= 256
    }
    labels = dict(list(labels.items())[:_MAX_LABELS])
    labels.update(search_name=name, app=hook.app, owner=hook.owner)
    alert = Alert(
        source=ctx.source,
        kind="splunk",
        identity=stable_hash(["splunk", name, keys]),
        name=name,
        resource=resource,
        severity=severity,
        status=Status.FIRING,  # Splunk never sends a clear
        summary=summary or (f"{name} on {resource}" if resource else name),
        description=result.get("_raw", ""),
        labels={key: value for key, value in labels.items() if value},
        starts_at=None,  # `_time` is an event's time, not when a problem began
        links=[hook.results_link] if hook.results_link else [],
        received_at=ctx.received_at,
        raw={"sid": hook.sid, "app": hook.app, "owner": hook.owner, "result_time": result.get("_time", "")},
    )
    return Parsed(alerts=[alert])


def _field(value: Any) -> str:
    """A result value as text: multivalue fields arrive as JSON arrays (`_si`) and are joined."""
    if isinstance(value, list):
        return ",".join(lenient.text(item) for item in value)
    return lenient.text(value)


def verify(body: bytes, headers: Mapping[str, str], query: Mapping[str, str], secret: str, now: datetime) -> None:
    """The `?token=` in the webhook URL must equal the source's secret (constant-time compare)."""
    if not secret:
        raise AuthError("no secret is configured for this source")
    token = query.get("token") or ""
    if not token:
        raise AuthError("missing ?token= in the webhook URL (Splunk's webhook action cannot send headers)")
    if not hmac.compare_digest(token.encode("utf-8", errors="replace"), secret.encode()):
        raise AuthError("?token= does not match this source's secret")


ADAPTER = SourceAdapter(kind="splunk", parse=parse, verify=verify, options=SplunkOptions)
