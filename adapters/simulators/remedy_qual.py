"""AR System qualifications (the `q=` of `/api/arsys/v1/entry/{form}`), the subset clients send.

Grammar (BMC docs, "Endpoints in AR REST API", https://docs.bmc.com/docs/ars91/): `'Field Name' op
value` with `=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE` (`%` any run, `_` one character); AND, OR, NOT
(AND binds tighter), parentheses; values are "double-quoted" strings, numbers or `$NULL$`. Field
labels are 'single-quoted' (with '' for a quote). Selection fields (enums) compare by their ordinal,
so `'Status' < "Resolved"` means New, Assigned, In Progress or Pending. Date fields compare with a
number as epoch seconds (`'Last Modified Date' >= 1764842400`), as AR System reads a date value given
as an integer. An unknown field is ARERR 314; an unreadable qualification ARERR 1587.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<field>'(?:[^']|'')*')
      | (?P<string>"(?:[^"]|"")*")
      | (?P<keyword>\$[A-Z]+\$)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|=|<|>|\(|\))
      | (?P<word>[A-Za-z]+)
    )""",
    re.VERBOSE,
)
_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}")  # as the REST API shows dates
Row = Mapping[str, Any]
Test = Callable[[Row], bool]


class QualificationError(ValueError):
    def __init__(self, number: int, text: str, appended: str) -> None:
        self.number, self.text, self.appended = number, text, appended
        super().__init__(f"ARERR {number} {text}: {appended}")


def parse(text: str, fields: Sequence[str], enums: Mapping[str, Sequence[str]]) -> Test:
    """A row test for qualification `text` over a form with `fields` (display names)."""
    tokens: list[tuple[str, str]] = []
    at = 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if not match:
            raise QualificationError(1587, "The qualification line is invalid", text[at:].strip())
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        at = match.end()
    if not tokens:
        return lambda row: True
    parser = _Parser(tokens, frozenset(fields), enums, text)
    test = parser.either()
    if parser.at != len(tokens):
        raise QualificationError(1587, "The qualification line is invalid", text)
    return test


class _Parser:
    def __init__(
        self, tokens: list[tuple[str, str]], fields: frozenset[str], enums: Mapping[str, Sequence[str]], text: str
    ) -> None:
        self.tokens, self.at, self.fields, self.enums, self.text = tokens, 0, fields, enums, text

    def peek(self) -> str:
        return self.tokens[self.at][1].upper() if self.at < len(self.tokens) else ""

    def take(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise QualificationError(1587, "The qualification line is invalid", self.text)
        self.at += 1
        return self.tokens[self.at - 1]

    def either(self) -> Test:
        terms = [self.both()]
        while self.peek() == "OR":
            self.take()
            terms.append(self.both())
        return lambda row: any(t(row) for t in terms)

    def both(self) -> Test:
        terms = [self.negation()]
        while self.peek() == "AND":
            self.take()
            terms.append(self.negation())
        return lambda row: all(t(row) for t in terms)

    def negation(self) -> Test:
        if self.peek() == "NOT":
            self.take()
            inner = self.negation()
            return lambda row: not inner(row)
        if self.peek() == "(":
            self.take()
            inner = self.either()
            if self.take()[1] != ")":
                raise QualificationError(1587, "The qualification line is invalid", self.text)
            return inner
        return self.comparison()

    def comparison(self) -> Test:
        kind, token = self.take()
        if kind != "field":
            raise QualificationError(1587, "The qualification line is invalid", token)
        name = token[1:-1].replace("''", "'")
        if name not in self.fields:
            raise QualificationError(314, "Field does not exist on current form", name)
        op = self.take()[1].upper()
        if op not in ("=", "!=", "<", "<=", ">", ">=", "LIKE"):
            raise QualificationError(1587, "The qualification line is invalid", op)
        kind, token = self.take()
        value: Any = None
        if kind == "string":
            value = token[1:-1].replace('""', '"')
        elif kind == "number":
            value = float(token)
        elif token != "$NULL$":
            raise QualificationError(1587, "The qualification line is invalid", token)
        return _comparison(name, op, value, self.enums.get(name))


def _comparison(name: str, op: str, want: Any, enum: Sequence[str] | None) -> Test:
    if op == "LIKE":
        pattern = re.compile(
            "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(want)), re.DOTALL
        )
        return lambda row: row.get(name) is not None and pattern.fullmatch(str(row[name])) is not None

    def key(value: Any) -> Any:
        if isinstance(want, float) and isinstance(value, str) and _DATE.fullmatch(value):
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        if enum is not None and value in enum:
            return enum.index(value)
        if isinstance(value, int | float):
            return float(value)
        return str(value)

    def test(row: Row) -> bool:
        have = row.get(name)
        if want is None or have is None:
            same = (have is None or have == "") == (want is None)
            return same if op == "=" else (not same if op == "!=" else False)
        a, b = key(have), key(want)
        if type(a) is not type(b):
            a, b = str(a), str(b)
        return bool(
            {
                "=": a == b,
                "!=": a != b,
                "<": a < b,
                "<=": a <= b,
                ">": a > b,
                ">=": a >= b,
            }[op]
        )

    return test
