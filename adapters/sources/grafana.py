"""Grafana unified alerting webhook contact point (payload version 1): one group of alerts per request.

Format: https://github.com/grafana/alerting, receivers/webhook/v1/webhook.go and
templates/template_data.go; Grafana's webhook notifier docs,
https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/.
Like Alertmanager's, but `version` is "1" and each alert carries dashboard, panel and silence links.
Unknown keys are ignored (Grafana adds some without bumping the version).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.sources import lenient
from adapters.sources.alertmanager import SEVERITY_LABELS, describe, fingerprint
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Moment, Severity, Status
from bridge.core.source import ParseContext, Parsed, Rejected, SourceAdapter

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: the alert is still firing


class GrafanaOptions(BaseModel):
    """How this source checks Grafana's HMAC signature (contact point `hmacConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signature_header: str = "X-Grafana-Alerting-Signature"
    # Grafana signs `timestamp + ":" + body` only when the contact point names a timestamp header.
    timestamp_header: str = "X-Grafana-Alerting-Timestamp"
    replay_window: int = Field(300, ge=1, le=86_400, description="seconds a signed timestamp stays valid")
    # Both on by default: an unsigned request, or one signed without a timestamp (which could be replayed
    # forever), is refused. Off: `Authorization: Bearer <secret>` passes, or a signature alone.
    require_signature: bool = True
    require_timestamp: bool = True


class _GrafanaAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Moment
    endsAt: Moment | None = None
    generatorURL: str = ""
    fingerprint: str = ""
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    imageURL: str = ""
    ruleUID: str = ""
    values: dict[str, float | None] | None = None

    @field_validator("endsAt", mode="before")
    @classmethod
    def _zero_is_open(cls, value: Any) -> Any:
        return None if value in (_GO_ZERO_TIME, "", None) else value

    @field_validator("startsAt", "endsAt", mode="after")
    @classmethod
    def _utc_if_naive(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class _GrafanaEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    alerts: list[Any]
    groupKey: str = ""
    externalURL: str = ""
    receiver: str = ""
    orgId: int | None = None


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    doc = lenient.load_json(body, check_shape=False)
    if not isinstance(doc, dict):
        raise PayloadError("body must be a JSON object with an 'alerts' list")
    problem = lenient.shape_problem({key: value for key, value in doc.items() if key != "alerts"})
    if problem:
        raise PayloadError(problem)
    if "alerts" not in doc and "ruleId" in doc:
        raise PayloadError("this is Grafana's legacy alerting webhook (ruleId, evalMatches); use unified alerting")
    try:
        env = _GrafanaEnvelope.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(describe(exc)) from exc
    if env.version != "1":
        raise PayloadError(f"version: expected '1' (Grafana unified alerting webhook), got {env.version[:20]!r}")
    out = Parsed()
    for index, raw in enumerate(env.alerts):
        where = f"alerts[{index}]"
        problem = lenient.shape_problem(raw, where, max_depth=lenient.MAX_DEPTH - 2)
        if problem:
            out.rejected.append(Rejected(problem, raw))
            continue
        try:
            out.alerts.append(_to_alert(_GrafanaAlert.model_validate(raw), env, ctx))
        except ValidationError as exc:
            out.rejected.append(Rejected(f"{where}: {describe(exc)}", raw))
    return out


def _to_alert(ga: _GrafanaAlert, env: _GrafanaEnvelope, ctx: ParseContext) -> Alert:
    labels, notes = ga.labels, ga.annotations
    links = [ga.generatorURL, ga.dashboardURL, ga.panelURL, notes.get("runbook_url", "")]
    raw: dict[str, Any] = {
        "groupKey": env.groupKey,
        "externalURL": env.externalURL,
        "receiver": env.receiver,
        "orgId": env.orgId,
        "ruleUID": ga.ruleUID,
        "silenceURL": ga.silenceURL,
        "imageURL": ga.imageURL,
        "values": ga.values,
    }
    return Alert(
        source=ctx.source,
        kind="grafana",
        # Grafana computes the fingerprint over private labels it does not send, so it cannot be
        # recomputed here; the visible labels are only a fallback for custom payload templates.
        identity=ga.fingerprint or fingerprint(labels),
        name=labels.get("alertname", ""),
        resource=labels.get("instance") or labels.get("host") or labels.get("pod") or labels.get("service") or "",
        severity=SEVERITY_LABELS.get(labels.get("severity", "").lower(), Severity.WARNING),
        status=Status(ga.status),
        summary=notes.get("summary", "") or labels.get("alertname", ""),
        description=notes.get("description", "") or notes.get("message", ""),
        labels=labels,
        annotations=notes,
        starts_at=ga.startsAt,
        ends_at=ga.endsAt,
        links=list(dict.fromkeys(link for link in links if link)),
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value not in ("", None)},
    )


def verify(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    secret: str,
    now: datetime,
    *,
    options: GrafanaOptions | None = None,
) -> None:
    """Grafana's HMAC-SHA256 signature (grafana/alerting http/hmac.go), else `Authorization: Bearer`.

    hex(HMAC(secret, body)), or hex(HMAC(secret, timestamp + ":" + body)) when the contact point
    sets a timestamp header; the timestamp must then be within `replay_window` of `now`.
    """
    opts = options or GrafanaOptions()
    if not secret:
        raise AuthError("no secret is configured for this source")
    signature = lenient.header(headers, opts.signature_header).strip().lower()
    if not signature:
        if opts.require_signature:
            raise AuthError(f"missing {opts.signature_header} header (HMAC-SHA256 of the body)")
        _check_bearer(headers, secret, opts.signature_header)
        return
    stamp = lenient.header(headers, opts.timestamp_header).strip()
    if stamp and not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise AuthError(f"{opts.timestamp_header} must be Unix seconds, got {stamp[:20]!r}")
    if not stamp and opts.require_timestamp:
        raise AuthError(f"missing {opts.timestamp_header} header: this source requires signed timestamps")
    message = stamp.encode() + b":" + body if stamp else body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", errors="replace")):
        raise AuthError(f"{opts.signature_header} does not match: check the contact point's HMAC secret")
    if stamp:
        skew = abs(now.timestamp() - int(stamp))
        if skew > opts.replay_window:
            raise AuthError(
                f"signed timestamp is {int(skew)} s away from the bridge's clock, "
                f"outside the {opts.replay_window} s replay window"
            )


def _check_bearer(headers: Mapping[str, str], secret: str, signature_header: str) -> None:
    scheme, _, token = lenient.header(headers, "Authorization").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(f"missing {signature_header} header or 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode("utf-8", errors="replace"), secret.encode()):
        raise AuthError("bearer token does not match this source's secret")


def replayed(headers: Mapping[str, str], *, options: GrafanaOptions | None = None) -> tuple[str, float] | None:
    """What tells a signed request from a replay of it: its signature, remembered (by the ingress, in
    Redis, so by every replica) for twice the replay window, the span its timestamp is accepted in."""
    opts = options or GrafanaOptions()
    signature = lenient.header(headers, opts.signature_header).strip().lower()
    if not signature or not lenient.header(headers, opts.timestamp_header).strip():
        return None  # no signed timestamp: nothing bounds how long to remember it
    return signature, 2.0 * opts.replay_window


def configured(raw_options: Mapping[str, Any]) -> SourceAdapter:
    """This adapter with `verify` and `replay` bound to a source's options (header names, replay window)."""
    opts = GrafanaOptions.model_validate(dict(raw_options))
    return replace(ADAPTER, verify=partial(verify, options=opts), replay=partial(replayed, options=opts))


ADAPTER = SourceAdapter(
    kind="grafana", parse=parse, verify=verify, options=GrafanaOptions, bind=configured, replay=replayed
)
