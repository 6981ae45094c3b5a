"""Alertmanager matcher syntax: `team="db"`, `severity=~"critical|major"`, `env!="dev"`, `a!~"x.*"`.

Follows prometheus/alertmanager pkg/labels (matcher.go, parse.go): regexes are anchored, values may be
quoted (with Go escapes) or bare, a list may be wrapped in `{...}` and separated by commas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Op(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


_MATCHER = re.compile(
    r"""\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>=~|!~|!=|=)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|[^,}"]*?)\s*(?:,|$)""",
    re.VERBOSE,
)
_UNESCAPE = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.pattern is not None:
            return bool(self.pattern.fullmatch(actual)) == (self.op is Op.RE)
        return (actual == self.value) == (self.op is Op.EQ)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matchers(text: str) -> list[Matcher]:
    """Parse one matcher or a `{a="b", c=~"d"}` list. Raises ValueError with what is wrong."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    out: list[Matcher] = []
    pos = 0
    while pos < len(body) and body[pos:].strip():
        m = _MATCHER.match(body, pos)
        if m is None or m.end() == pos:
            raise ValueError(f'bad matcher at {body[pos:]!r}: expected name="value" (ops = != =~ !~)')
        out.append(_build(m.group("name"), Op(m.group("op")), _unquote(m.group("value"))))
        pos = m.end()
    if not out:
        raise ValueError("empty matcher")
    return out


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _build(name: str, op: Op, value: str) -> Matcher:
    if op in (Op.RE, Op.NRE):
        try:
            return Matcher(name, op, value, re.compile(value))
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r} for {name}: {exc}") from exc
    return Matcher(name, op, value)


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), raw[1:-1])
    return raw
