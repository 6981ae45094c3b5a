"""Alertmanager matcher syntax: `team="db"`, `severity=~"critical|major"`, `env!="dev"`, `a!~"x.*"`.

Follows prometheus/alertmanager pkg/labels (matcher.go, parse.go): regexes are anchored, values may be
quoted (with Go escapes) or bare, a list may be wrapped in `{...}` and separated by commas.

Regular expressions are RE2's (google-re2), the syntax and semantics of Go's regexp that Alertmanager
uses, and match in time linear in the value's length: no pattern backtracks (`(a+)+b` is as cheap as
`ab`), and what Python's `re` has beyond RE2 (look-around, back-references) is refused. The work of
one match is bounded by the pattern's size and the value's length, both capped here:
a pattern of at most MAX_PATTERN characters and MAX_PROGRAM RE2 instructions, a repeat count of
at most 1000 (as Go), and a regex sees at most the first MAX_VALUE characters of a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import re2
from re2 import _re2  # the RE2 object itself: the `re`-like wrapper costs ~3 us a match, this ~0.8

MAX_PATTERN = 8192  # characters of one regular expression (a list of ~300 host names fits)
MAX_PROGRAM = 10_000  # RE2 instructions of one compiled regular expression
MAX_VALUE = 1024  # characters of a label value that a regular expression sees (equality sees all)
MAX_MATCHERS = 64  # in one `{...}` list
MAX_REPEAT = 1000  # `{n}`, `{n,m}`: as Go's regexp, which refuses more
_MEMO = 512  # per matcher: outcomes of values up to _MEMO_LEN characters, forgotten when full
_MEMO_LEN = 128
_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print each refused pattern to stderr
_OPTIONS.never_capture = True  # only whether it matches
_OPTIONS.max_mem = 1 << 20  # bounds a compile (to ~10 ms: it holds the GIL) and the DFA cache of one regex


class Op(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


# Possessive throughout (`*+`): the parser never backtracks either, so a long run of spaces or an
# unterminated value costs linear time (lazy `[^,}"]*?\s*` was cubic: 1,000 spaces took 5 s).
_MATCHER = re.compile(
    r"""\s*+(?P<name>[A-Za-z_][A-Za-z0-9_.]*+)\s*+(?P<op>=~|!~|!=|=)\s*+
        (?P<value>"(?:[^"\\]|\\.)*+"|[^,}"]*+)\s*+(?:,|$)""",
    re.VERBOSE,
)
_UNESCAPE = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: Regex | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.pattern is not None:
            return self.pattern.fullmatch(actual) == (self.op is Op.RE)
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
        if len(out) == MAX_MATCHERS:
            raise ValueError(f"more than {MAX_MATCHERS} matchers in one list")
        out.append(_build(m.group("name"), Op(m.group("op")), _unquote(m.group("value"))))
        pos = m.end()
    if not out:
        raise ValueError("empty matcher")
    return out


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


@dataclass(eq=False, slots=True)
class Regex:
    """One compiled RE2 pattern, anchored at both ends; thread-safe (the engine may match off the loop)."""

    text: str
    program: Any = field(repr=False)  # re2._re2.RE2
    size: int  # RE2 program size: with the value's length, what bounds the work of one match
    _memo: dict[str, bool] = field(default_factory=dict, repr=False)

    def fullmatch(self, value: str) -> bool:
        known = self._memo.get(value)
        if known is not None:
            return known
        data = value[:MAX_VALUE].encode("utf-8", "surrogatepass")
        found: bool = self.program.Match(_BOTH, data, 0, len(data))[0][0] >= 0
        if len(value) <= _MEMO_LEN:
            if len(self._memo) >= _MEMO:
                self._memo.clear()
            self._memo[value] = found
        return found


@lru_cache(maxsize=1024)
def compile_regex(text: str) -> Regex:
    """RE2 for a matcher's value, with the bounds above; ValueError naming what is wrong."""
    if len(text) > MAX_PATTERN:
        raise ValueError(f"regular expression of {len(text)} characters: at most {MAX_PATTERN}")
    repeat = _too_many_repeats(text)
    if repeat:
        raise ValueError(f"invalid repeat count {repeat} (at most {MAX_REPEAT}, as in Go and Alertmanager)")
    program = _re2.RE2(text.encode("utf-8", "surrogatepass"), _OPTIONS)
    if not program.ok():
        raise ValueError(program.error().decode("utf-8", "replace"))
    size = program.ProgramSize()
    if size > MAX_PROGRAM:
        raise ValueError(f"regular expression too large: {size} RE2 instructions, at most {MAX_PROGRAM}")
    return Regex(text, program, size)


_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _too_many_repeats(text: str) -> str:
    """A `{n,m}` with a count over MAX_REPEAT outside brackets, as Go refuses; C++ RE2 refuses most but
    reads a count of nine digits or more as literal text. '' when there is none."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":  # a bracket expression: `]` first (after an optional `^`) is a member
            i += 2 if text.startswith("[^", i) else 1
            i += 1 if text.startswith("]", i) else 0
            while i < n and text[i] != "]":
                if text.startswith("[:", i):
                    end = text.find(":]", i + 2)
                    i = end + 2 if end >= 0 else i + 1
                    continue
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if char == "{":
            m = _REPEAT.match(text, i)
            if m and any(part and int(part) > MAX_REPEAT for part in m.groups()):
                return m.group(0)
        i += 1
    return ""


def _build(name: str, op: Op, value: str) -> Matcher:
    if op in (Op.RE, Op.NRE):
        try:
            return Matcher(name, op, value, compile_regex(value))
        except ValueError as exc:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise ValueError(f"bad regular expression {shown!r} for {name}: {exc}") from None
    return Matcher(name, op, value)


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), raw[1:-1])
    return raw
