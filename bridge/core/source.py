"""The source-adapter contract: a pure parser from one tool's webhook to `Alert`s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bridge.core.models import Alert


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a parser may know besides the request: no config, no clock, no I/O."""

    source: str  # the configured source name, e.g. "alertmanager" or "prom-eu"
    received_at: datetime
    options: Mapping[str, Any] = field(default_factory=dict)  # the source's own per-kind settings
    # What a door read from the request besides the body, for a kind whose calls say more in their URL
    # (the Opsgenie door: the action, the alert it is about); empty at /webhook/{source}.
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejected:
    """One alert of a sound envelope that could not be read: kept as a dead letter, counted."""

    reason: str
    raw: Any


@dataclass(slots=True)
class Parsed:
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Notifications that are the tool's echo of the bridge's own acknowledgement or comment upstream (the
    # loop back: bridge.core.sync.MARKER, the bridge's author): dropped, only counted.
    ours: int = 0


# parse(body, content_type, headers, ctx) -> Parsed; raises PayloadError when the envelope is unreadable.
ParseFn = Callable[[bytes, str, Mapping[str, str], ParseContext], Parsed]
# verify(body, headers, query, secret, now) -> None; raises AuthError. `now` is passed in (no clock here).
VerifyFn = Callable[[bytes, Mapping[str, str], Mapping[str, str], str, datetime], None]
# replay(headers) -> (nonce, seconds) or None: a verified request's nonce (its signature), which the
# ingress remembers in Redis for that long and refuses to see twice.
ReplayFn = Callable[[Mapping[str, str]], "tuple[str, float] | None"]


@dataclass(frozen=True, slots=True)
class SourceAdapter:
    kind: str
    parse: ParseFn
    content_types: frozenset[str] = frozenset({"application/json"})
    # None: the default check, `Authorization: Bearer <secret>` compared in constant time.
    verify: VerifyFn | None = None
    # The pydantic model (extra="forbid") that the config loader validates this kind's `options` with.
    options: type[BaseModel] | None = None
    # For kinds whose `verify` reads options (signature header names, a replay window): this adapter
    # with them bound, made once per configured source at start-up.
    bind: Callable[[Mapping[str, Any]], SourceAdapter] | None = None
    # For kinds whose signatures carry a timestamp: the nonce the ingress refuses to see twice.
    replay: ReplayFn | None = None
