"""Masking the mapping's secrets out of what the bridge stores and answers: dead letters, the audit
trail, the admin API and the log.

A configured secret is:

- every `SecretStr` value of a source or desk (passwords, tokens, API tokens, client secrets, HMAC
  secrets), and the `user:password` pair it is sent as in a Basic `Authorization` header (base64);
- every value of a desk's fixed `headers` (an `X-Api-Key`);
- every value a source or desk section takes from the environment or a file (`${VAR}`, `*_file:`):
  that is how the mapping format keeps secrets out of the YAML; of a `url` taken so, its path if it
  is long enough to hold one (a webhook URL often carries its token there), not the whole address.

`Masker.text` replaces each of them (as it is, and URL-encoded) by "***" wherever it appears, the
credentials of `Bearer`/`Basic` headers, and the values of query parameters known to carry secrets
(`api_key`, `token`, `sig`, ...); `Masker.value` does that to every string in a JSON-like value and
masks whole values under keys that name a credential. Secrets shorter than MIN_LENGTH are not
searched for (masking every `a` in a text hides more than it protects).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_LENGTH = 4
# Query parameters that carry a credential, by name, in any URL in any text.
SECRET_PARAMS = (
    "api[_-]?key|apikey|key|token|access[_-]?token|auth|authorization|password|passwd|pwd|pass|secret"
    "|client[_-]?secret|sig|signature|session|sessionid|code|private[_-]?token|x-api-key"
)
_QUERY = re.compile(r"(?i)([?&;](?:" + SECRET_PARAMS + r")=)[^&#\s\"'<>]*")
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
# Keys of a JSON value whose whole value is a credential (narrower than the query names: a Jira issue's
# `key` or an OAuth answer's `code` in a stored answer are not secrets).
_SECRET_KEY = re.compile(
    r"(?i)^(?:api[_-]?key|apikey|api[_-]?token|token|access[_-]?token|refresh[_-]?token|password|passwd|secret"
    r"|client[_-]?secret|private[_-]?token|x-api-key|authorization|cookie|credentials?)$"
)
_MAYBE = re.compile(r"(?i)bearer|basic|[?&;]")  # what the patterns above need, found in one search


class Masker:
    """Masks a fixed set of secrets (and the patterns above) in text and JSON-like values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_LENGTH:  # as it is, URL-encoded, and inside a JSON string
                forms.update({secret, quote(secret, safe=""), quote_plus(secret), orjson.dumps(secret)[1:-1].decode()})
        self.secrets = frozenset(s for s in forms if s)
        # Longest first, so that a secret containing another is masked whole.
        self._ordered = sorted(self.secrets, key=len, reverse=True)

    def __or__(self, other: Masker) -> Masker:
        return Masker(self.secrets | other.secrets)

    def text(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        if _MAYBE.search(text):
            text = _QUERY.sub(r"\1" + MASK, text)
            text = _AUTH.sub(r"\1 " + MASK, text)
        return text

    def value(self, value: Any) -> Any:
        """`value` with every string masked, and whole values under credential-named keys."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        if isinstance(value, Mapping):
            return {
                k: (MASK if isinstance(k, str) and _SECRET_KEY.match(k) and value_shown(v) else self.value(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def value_shown(value: Any) -> bool:
    """Whether a value under a credential's name would show something (a count or a flag does not)."""
    return not isinstance(value, bool | int | float) and value not in (None, "")


def configured(models: Iterable[BaseModel], from_env: Iterable[str] = ()) -> set[str]:
    """The secrets of these config models (sources, desks), and the values taken from the environment."""
    found = set(from_env)
    for model in models:
        _collect(model, found)
    return found


def _collect(model: BaseModel, found: set[str]) -> None:
    user = next(
        (getattr(model, n) for n in ("user", "username", "email") if isinstance(getattr(model, n, None), str)), ""
    )
    for name in type(model).model_fields:
        item = getattr(model, name, None)
        if isinstance(item, SecretStr):
            secret = item.get_secret_value()
            found.add(secret)
            if user and secret:  # as it goes out in `Authorization: Basic`
                found.add(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
        elif isinstance(item, BaseModel):
            _collect(item, found)
        elif name == "headers" and isinstance(item, Mapping):
            found.update(str(v) for v in item.values())
        elif isinstance(item, Mapping):
            for child in item.values():
                if isinstance(child, BaseModel):
                    _collect(child, found)
