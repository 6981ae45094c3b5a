"""Splunk Observability Cloud (SignalFx) detector webhook: one incident state change per request.

Format: https://github.com/splunk/public-o11y-docs, admin/notif-services/webhook.rst (field table), and
https://dev.splunk.com/observability/docs/integrations/webhook_integration_overview/. The payload can be
rewritten with a Handlebars template, so every field but `incidentId` is optional. Signing:
`X-SFX-Signature` = base64(HMAC-SHA256(shared secret, raw body)). Splunk Observability retries for 24 h
until it gets a 200, so a payload it cannot fix is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from adapters.sources import lenient
from adapters.sources.alertmanager import describe
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter

SEVERITIES: Mapping[str, Severity] = {
    "critical": Severity.CRITICAL,
    "major": Severity.MAJOR,
    "minor": Severity.MINOR,
    "warning": Severity.WARNING,
    "info": Severity.INFO,
}
# statusExtended (falls back to `status`): "manually resolved" and "stopped" (detector edited or
# deleted) close the ticket too; the reason stays in the `sfx_status` label.
STATUSES: Mapping[str, Status] = {
    "anomalous": Status.FIRING,
    "ok": Status.RESOLVED,
    "manually resolved": Status.RESOLVED,
    "stopped": Status.RESOLVED,
}
_RESOURCE_DIMENSIONS = [
    "host",
    "host.name",
    "kubernetes_pod_name",
    "kubernetes_node",
    "container_id",
    "AWSUniqueId",
]


class SignalFxOptions(BaseModel):
    """How this source checks `X-SFX-Signature` and which dimension names the resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signature_header: str = "X-SFX-Signature"
    require_signature: bool = False  # False: a request without a signature may use `Authorization: Bearer`
    resource_dimensions: list[str] = Field(default_factory=lambda: list(_RESOURCE_DIMENSIONS))


Text = Annotated[str, BeforeValidator(lambda value: "" if value is None else value)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: dict[str, Any] = Field(default_factory=dict)
    dimensions: dict[str, Any] = Field(default_factory=dict)
    value: float | str | None = None


class _Incident(BaseModel):
    model_config = ConfigDict(extra="ignore")

    incidentId: str = Field(min_length=1)
    detector: Text = ""
    detectorId: Text = ""
    detectorUrl: Text = ""
    description: Text = ""
    eventType: Text = ""
    rule: Text = ""
    severity: Text = ""
    status: Text = ""
    statusExtended: Text = ""
    messageTitle: Text = ""
    messageBody: Text = ""
    imageUrl: Text = ""
    runbookUrl: Text = ""
    tip: Text = ""
    originatingMetric: Text = ""
    triggeredWhileMuted: bool | None = None
    timestamp: datetime | None = None
    inputs: dict[str, _Input] = Field(default_factory=dict)

    @field_validator("timestamp", mode="after")
    @classmethod
    def _utc_if_naive(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(SignalFxOptions, ctx.options, ctx.source)
    doc = lenient.load_json(body)
    if not isinstance(doc, dict):
        raise PayloadError("body must be a JSON object (Splunk Observability webhook)")
    try:
        sfx = _Incident.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(describe(exc)) from exc
    said = (sfx.statusExtended or sfx.status).strip().lower()
    status = STATUSES.get(said)
    if status is None:
        raise PayloadError(f"statusExtended: unknown value {said[:40]!r}; expected one of {', '.join(STATUSES)}")
    dimensions: dict[str, str] = {}
    for one in sfx.inputs.values():
        for name, value in {**one.dimensions, **one.key}.items():
            dimensions.setdefault(name, lenient.text(value))
    resource = next((dimensions[d] for d in opts.resource_dimensions if dimensions.get(d)), "")
    labels = {
        **dimensions,
        "detector": sfx.detector,
        "detector_id": sfx.detectorId,
        "rule": sfx.rule,
        "sfx_status": said,
    }
    notes = {"description": sfx.description, "tip": sfx.tip, "runbook_url": sfx.runbookUrl}
    raw = {
        "incidentId": sfx.incidentId,
        "eventType": sfx.eventType,
        "originatingMetric": sfx.originatingMetric,
        "triggeredWhileMuted": sfx.triggeredWhileMuted,
        "values": {name: one.value for name, one in sfx.inputs.items() if one.value is not None},
    }
    alert = Alert(
        source=ctx.source,
        kind="signalfx",
        identity=sfx.incidentId,  # the same on trigger and clear
        name=sfx.detector or sfx.rule,
        resource=resource,
        severity=SEVERITIES.get(sfx.severity.strip().lower(), Severity.WARNING),
        status=status,
        summary=sfx.messageTitle or f"{sfx.detector}: {sfx.rule}".strip(": "),
        description=sfx.messageBody or sfx.description,
        labels={key: value for key, value in labels.items() if value},
        annotations={key: value for key, value in notes.items() if value},
        starts_at=sfx.timestamp if status is Status.FIRING else None,
        ends_at=sfx.timestamp if status is Status.RESOLVED else None,
        links=[link for link in (sfx.detectorUrl, sfx.runbookUrl, sfx.imageUrl) if link],
        received_at=ctx.received_at,
        raw={key: value for key, value in raw.items() if value not in ("", None, {})},
    )
    return Parsed(alerts=[alert])


def verify(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    secret: str,
    now: datetime,
    *,
    options: SignalFxOptions | None = None,
) -> None:
    """`X-SFX-Signature` = base64(HMAC-SHA256(secret, body)); without it, `Authorization: Bearer <secret>`.

    The signature carries no timestamp, so there is no replay window to check.
    """
    opts = options or SignalFxOptions()
    if not secret:
        raise AuthError("no secret is configured for this source")
    signature = lenient.header(headers, opts.signature_header).strip()
    if not signature:
        if opts.require_signature:
            raise AuthError(f"missing {opts.signature_header} header (base64 HMAC-SHA256 of the body)")
        scheme, _, token = lenient.header(headers, "Authorization").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(f"missing {opts.signature_header} header or 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode("utf-8", errors="replace"), secret.encode()):
            raise AuthError("bearer token does not match this source's secret")
        return
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode("utf-8", errors="replace")):
        raise AuthError(f"{opts.signature_header} does not match: check the integration's shared secret")


def configured(raw_options: Mapping[str, Any]) -> SourceAdapter:
    """This adapter with `verify` bound to a source's options (signature header, bearer fallback)."""
    opts = SignalFxOptions.model_validate(dict(raw_options))
    return replace(ADAPTER, verify=partial(verify, options=opts))


ADAPTER = SourceAdapter(kind="signalfx", parse=parse, verify=verify, options=SignalFxOptions, bind=configured)
