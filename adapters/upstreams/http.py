"""What the HTTP upstreams share: the desks' transport, one rule for turning an answer into an error, the
settings every HTTP upstream has, and the comment text.

The rule: no answer (connect error, timeout), 429 and 5xx are `DeskTransient` (retried from Redis); any other
non-2xx, 401 and 403 included, is `DeskRejected` (a dead letter: retrying the same call cannot succeed).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SecretStr, WithJsonSchema

from adapters.desks.transport import FLAG_SCHEMA, Answer, Seconds, Transport, origin, plain_http
from bridge.core.errors import DeskError, DeskRejected, DeskTransient
from bridge.core.sync import MARKER, Acknowledgement

DEFAULT_AUTHOR = "alert-ticket-bridge"


class HttpSettings(BaseModel):
    """Keys every HTTP upstream has: TLS, timeout, and the plain-http guard the desks have."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled
    timeout: Seconds = 10.0
    allow_insecure_http: Annotated[bool, WithJsonSchema(FLAG_SCHEMA)] = False


def check_urls(urls: list[str], allow_insecure_http: bool) -> None:
    """Refuse plain http:// to another host unless allowed: the tool's credentials would cross in clear."""
    for url in urls:
        if plain_http(url) and not allow_insecure_http:
            raise ValueError(
                f"url {origin(url)!r} is plain http://: the credentials would cross the network in clear; use"
                " https://, or set allow_insecure_http: true to accept that"
            )


def secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def error(http: Transport, action: str, answer: Answer, reason: str = "") -> DeskError:
    """The error a non-2xx answer amounts to: 429 and 5xx transient, every other status rejected."""
    context = http.context(action, answer)
    message = f"{http.desk} {action}: HTTP {answer.status} at {context['url']}" + (f": {reason}" if reason else "")
    if answer.status == 429 or answer.status >= 500:
        return DeskTransient(message, retry_after=answer.retry_after, **context)
    return DeskRejected(message, **context)


def rejected(name: str, action: str, message: str, **context: Any) -> DeskRejected:
    return DeskRejected(f"{name} {action}: {message}", desk=name, action=action, **context)


def comment(ack: Acknowledgement, text: str = "") -> str:
    """What the tool is told: MARKER first (so that no cut loses it, and an echo is always recognised), then
    the bridge's words (or `text`), then the ticket's link if the words do not already carry it."""
    words = " ".join((text or ack.comment).replace(MARKER, " ").split())
    link = ack.ticket.url or ack.ticket.display or ack.ticket.id
    if link and link not in words:
        words = f"{words} ({link})" if words else link
    return f"{MARKER} {words}".strip()
