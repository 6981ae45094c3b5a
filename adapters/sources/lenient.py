"""Reading webhook bodies safely: bounded JSON, JSON broken by template senders, forms, placeholders.

Template senders (Nagios, Icinga 2 scripts, SolarWinds, Zabbix, Datadog) paste values into a body without
escaping them, so a quote or a backslash in a plugin's output breaks the JSON (Nagios substitutes macros
verbatim, https://assets.nagios.com/downloads/nagioscore/docs/nagioscore/4/en/macros.html; SolarWinds
"Variable construction"; Zabbix macros; Datadog $VARIABLES). Everything here turns what such a tool
really sends into plain Python values, and anything it cannot read into a `PayloadError` that names the
problem: never another exception, whatever the bytes.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError

from bridge.core.errors import ConfigError, PayloadError

MAX_DEPTH = 32  # vendor payloads are 2-4 levels deep; deeper is a mistake or an attack
MAX_TEXT = 65_536  # characters in one value: far above any real message, far below a desk's limit
MAX_FIELDS = 2_000  # form fields in one body
MAX_KEY = 256

FORM = "application/x-www-form-urlencoded"
TEMPLATE_TYPES = frozenset({"application/json", FORM, "text/plain"})

# Placeholders a sender leaves in the text when it cannot resolve them; they mean "no value".
SOLARWINDS_VARIABLE = re.compile(r"\$\{(?:[^{}]|\{[^{}]*\})*\}")  # ${N=…;M=…}, one nesting level
ZABBIX_MACRO = re.compile(r"\{(?:[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)+|\$[A-Z0-9_.]+(?::[^{}]*)?|#[A-Z0-9_.]+)\}")
NAGIOS_MACRO = re.compile(r"\$[A-Z][A-Z0-9_]*\$")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_NEXT_KEY = re.compile(r'\s*(?:\}\s*\Z|,\s*"[^"\\\r\n]{0,256}"\s*:)')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")

M = TypeVar("M", bound=BaseModel)


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` → `application/json`."""
    return content_type.partition(";")[0].strip().lower()


def load_json(body: bytes, *, check_shape: bool = True) -> Any:
    """Strict JSON from a tool that encodes properly (Grafana, Splunk, SignalFx), shape-checked.

    `check_shape=False` leaves the depth and size checks to a caller that checks each alert of a
    batch on its own, so one oversized alert is a dead letter rather than a refused batch.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise PayloadError(f"body is not valid UTF-8 (byte {bad.start})") from exc
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    problem = shape_problem(doc) if check_shape else None
    if problem:
        raise PayloadError(problem)
    return doc


def load_record(body: bytes, content_type: str) -> dict[str, Any]:
    """One flat record from a template sender: a JSON object, repaired if a template broke it, or a form.

    The body decides, not the Content-Type: `curl --data` without `-H` labels JSON as a form.
    Bytes that are not UTF-8 are read as Latin-1, because Nagios plugins on Windows hosts and old
    Unix locales emit it and losing the alert would be worse than a wrong accent.
    """
    text = decode(body, content_type)
    head = text.lstrip()[:1]
    if not head:
        raise PayloadError("body is empty")
    if head == "[":
        raise PayloadError("body is a JSON array; expected one JSON object per notification")
    if head == "{":
        doc = _json_object(text)
    elif "=" in text:
        doc = _form(text)
    else:
        raise PayloadError("body is neither a JSON object nor form fields (key=value&...)")
    problem = shape_problem(doc)
    if problem:
        raise PayloadError(problem)
    return doc


def decode(body: bytes, content_type: str = "") -> str:
    """Text of a body: the declared charset if Python knows it, else UTF-8 with Latin-1 for bad bytes."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("", "utf-8", "utf8"):
            try:
                codecs.lookup(charset)
                return body.decode(charset, errors="replace")
            except (LookupError, ValueError):
                break  # an unknown or odd charset: fall back to UTF-8
    return _latin1_for_bad_bytes(body.decode("utf-8", errors="surrogateescape"))


def _latin1_for_bad_bytes(text: str) -> str:
    # surrogateescape maps an undecodable byte b to U+DC00+b; chr(b) is its Latin-1 reading.
    return _SURROGATE.sub(lambda m: chr(ord(m.group()) - 0xDC00), text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:
            return repair_object(text)
        except PayloadError as unrepaired:
            raise PayloadError(f"body is not valid JSON ({exc}) and cannot be repaired: {unrepaired}") from exc
    if not isinstance(doc, dict):
        raise PayloadError(f"body is JSON {type(doc).__name__}; expected an object")
    return doc


def _form(text: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="surrogateescape")
    except ValueError as exc:  # more fields than max_num_fields
        raise PayloadError(f"form body has more than {MAX_FIELDS} fields") from exc
    return {_latin1_for_bad_bytes(key): _latin1_for_bad_bytes(value) for key, value in pairs}


def repair_object(text: str) -> dict[str, Any]:
    """Read a flat JSON object whose string values were pasted in unescaped.

    A quote ends a value only where the next key (`, "key":`) or the closing brace follows it, so
    `"output":"say "hi""` keeps its inner quotes. Such a sender escapes no quotes, so `\\"` is a
    backslash then a quote; `\\n`, `\\\\` and `\\u` escapes are decoded (Nagios escapes long output so), and
    any other backslash is kept (`C:\\Temp`). Control characters are kept. Nested objects are not repaired.
    """
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise PayloadError("a JSON object must start with '{' and end with '}'")
    end = len(s) - 1
    out: dict[str, Any] = {}
    i = _skip_ws(s, 1)
    if i == end:
        return out
    while True:
        if _at(s, i) != '"':
            raise PayloadError(f"expected a quoted key at character {i}")
        close = s.find('"', i + 1, min(end, i + 2 + MAX_KEY))
        if close < 0:
            raise PayloadError(f"unterminated or overlong key at character {i}")
        key = s[i + 1 : close]
        i = _skip_ws(s, close + 1)
        if _at(s, i) != ":":
            raise PayloadError(f"expected ':' after key {key[:40]!r} at character {i}")
        i = _skip_ws(s, i + 1)
        if _at(s, i) == '"':
            out[key], i = _loose_string(s, i + 1, end)
        else:
            out[key], i = _bare_value(s, i, end)
        i = _skip_ws(s, i)
        if i >= end:
            return out
        if s[i] != ",":
            raise PayloadError(f"expected ',' or '}}' at character {i}")
        i = _skip_ws(s, i + 1)


def _at(s: str, i: int) -> str:
    return s[i] if 0 <= i < len(s) else ""


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _closes(s: str, quote: int) -> bool:
    return _NEXT_KEY.match(s, quote + 1) is not None


def _loose_string(s: str, i: int, end: int) -> tuple[str, int]:
    start, buf = i, list[str]()
    while i < end:
        c = s[i]
        if c == '"' and _closes(s, i):
            return "".join(buf), i + 1
        if c == "\\" and i + 1 < end:
            n = s[i + 1]
            if n == '"':  # a sender that does not escape quotes wrote a backslash before one: `"C:\"`
                buf.append("\\")
                i += 1
                continue
            if n in _ESCAPES:
                buf.append(_ESCAPES[n])
                i += 2
                continue
            if n == "u" and _HEX4.fullmatch(s, i + 2, i + 6):
                code = int(s[i + 2 : i + 6], 16)
                buf.append("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code))  # no lone surrogates
                i += 6
                continue
        buf.append(c)
        i += 1
    raise PayloadError(f"unterminated string starting at character {start - 1}")


def _bare_value(s: str, i: int, end: int) -> tuple[Any, int]:
    stop = s.find(",", i, end)
    stop = end if stop < 0 else stop
    token = s[i:stop].strip()
    if token[:1] in ("{", "["):
        raise PayloadError(f"nested value at character {i} cannot be repaired")
    try:
        return orjson.loads(token), stop
    except orjson.JSONDecodeError:
        return token, stop  # an unquoted word: keep it as text


def shape_problem(doc: Any, where: str = "body", max_depth: int = MAX_DEPTH) -> str | None:
    """What makes a parsed document too deep or too large to accept, or None. Iterative: no recursion."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(doc, 1, ())]
    while stack:
        value, depth, trail = stack.pop()
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                return f"{_path(where, trail)}: text of {len(value)} characters, more than {MAX_TEXT}"
        elif isinstance(value, dict | list):
            if depth > max_depth:
                return f"{_path(where, trail)}: nested deeper than {max_depth} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and len(key) > MAX_KEY:
                    return f"{_path(where, trail)}: a key of {len(key)} characters, more than {MAX_KEY}"
                stack.append((child, depth + 1, (trail, key)))
    return None


def _path(where: str, trail: tuple[Any, ...]) -> str:
    parts: list[str] = []
    while trail:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:40]}")
    return where + "".join(reversed(parts))


def text(value: Any, placeholder: re.Pattern[str] | None = None) -> str:
    """A field as clean text: None is '', control characters go, unresolved placeholders are empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, str):
        out = value
    elif isinstance(value, int | float):
        out = str(value)
    else:
        out = orjson.dumps(value).decode()
    out = _CONTROL.sub("", out)
    if placeholder is not None:
        out = placeholder.sub("", out)
    return out.strip()


def normalised(doc: Mapping[str, Any], strip_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keys folded to lower-case letters and digits, so `host_name`, `HOSTNAME` and `hostName` meet.

    A key that starts with one of `strip_prefixes` (`NAGIOS_HOSTNAME`) is also reachable without it.
    """
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.setdefault(fold(key), value)
    for key in list(out):
        for prefix in strip_prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                out.setdefault(key[len(prefix) :], out[key])
    return out


def fold(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


class Record:
    """One flat notification read by loose field names, as template senders name fields as they like.

    `keys` lists, per field, the folded keys it may arrive under (first non-empty wins);
    `overrides` (a source's `fields` option) replaces that list with the operator's own key.
    Placeholders the sender left unresolved read as ''; an object or list where text belongs is a
    PayloadError naming the field.
    """

    def __init__(
        self,
        doc: Mapping[str, Any],
        keys: Mapping[str, tuple[str, ...]],
        *,
        overrides: Mapping[Any, str] | None = None,
        placeholder: re.Pattern[str] | None = None,
        strip_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._doc = normalised(doc, strip_prefixes)
        self._keys = keys
        self._overrides = {field: fold(key) for field, key in (overrides or {}).items()}
        self._placeholder = placeholder

    def __call__(self, field: str) -> str:
        override = self._overrides.get(field)
        return self.first(*((override,) if override else self._keys[field]), field=field)

    def first(self, *keys: str, field: str = "") -> str:
        """The first non-empty value among folded `keys`."""
        for key in keys:
            value = self._doc.get(key)
            if isinstance(value, dict | list):
                kind = "an object" if isinstance(value, dict) else "a list"
                raise PayloadError(f"{field or key}: expected text, got {kind}")
            found = text(value, self._placeholder)
            if found:
                return found
        return ""


def epoch(value: str, field: str, *, per_second: int = 1) -> datetime | None:
    """Unix time in seconds (or 1/`per_second` s) as UTC; '' and 0 are None, garbage is a PayloadError."""
    if not value:
        return None
    try:
        seconds = float(value) / per_second
    except ValueError:
        raise PayloadError(f"{field}: expected a Unix time, got {value[:40]!r}") from None
    if seconds == 0:
        return None
    if not math.isfinite(seconds) or not 0 < seconds < 32_503_680_000:  # before year 3000
        raise PayloadError(f"{field}: {value[:40]!r} is not a plausible Unix time")
    return datetime.fromtimestamp(seconds, UTC)


def header(headers: Mapping[str, str], name: str) -> str:
    """A request header by case-insensitive name ('' when absent): aiohttp's mapping or a plain dict."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), "")
    return value


def options(model: type[M], raw: Mapping[str, Any], source: str) -> M:
    """The source's options, validated; bad options are the operator's error (500), not the sender's."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(f"options of source {source!r}: {exc}") from exc
