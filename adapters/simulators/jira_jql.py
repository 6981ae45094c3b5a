"""JQL, the subset a desk client uses: parse, filter, sort (https://support.atlassian.com "JQL fields/operators").

Grammar: clauses `field op value` joined by AND / OR (AND binds tighter), NOT, parentheses, then
`ORDER BY field [ASC|DESC], ...`. Operators `=`, `!=`, `~`, `!~`, `in (...)`, `not in (...)`,
`is EMPTY`, `is not EMPTY`, and `>=`, `>`, `<=`, `<` on the dates `created` and `updated` (values
"yyyy/MM/dd HH:mm", "yyyy-MM-dd HH:mm", "yyyy/MM/dd" or "yyyy-MM-dd", read in the searching user's
profile time zone, as Jira reads them: the store's `time_zone`, UTC by default). Values are bare
words or double-quoted strings with backslash escapes.
Keywords and field names are case-insensitive; so are values, except labels and property values.
Fields: project, key, issuetype (type), status, statusCategory, labels, summary, text,
resolution, priority, created, and `issue.property[key].path` when the site indexes that property.
Any other field is the vendor's 400: "Field 'x' does not exist or you do not have permission to view it."
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op>!=|!~|>=|<=|=|~|>|<|\(|\)|,)
      | (?P<word>issue\.property\[[^\]]+\](?:\.[\w.]+)?|[\w.\-:/@]+)
    )""",
    re.VERBOSE,
)
_CATEGORIES = {"to do": "new", "new": "new", "in progress": "indeterminate", "indeterminate": "indeterminate"}
_CATEGORIES |= {"done": "done", "complete": "done"}
_CASE_SENSITIVE = ("labels", "issue.property[")


class JqlError(ValueError):
    """An unreadable query or an unknown field: the search answers 400 with this message."""


Row = Mapping[str, Any]  # an issue as the search sees it: field name -> str | list[str] | None
Test = Callable[[Row], bool]


@dataclass(frozen=True, slots=True)
class Query:
    test: Test
    order: tuple[tuple[str, bool], ...]  # (field, descending)

    def select(self, rows: Sequence[Row]) -> list[Row]:
        found = [row for row in rows if self.test(row)]
        # Ties (issues created in the same millisecond) fall back to the issue id, in the first key's direction.
        found.sort(key=_by("key_number"), reverse=self.order[0][1] if self.order else True)
        for name, descending in reversed(self.order):
            found.sort(key=_by(name), reverse=descending)
        return found


def parse(text: str, indexed_properties: Collection[str] = (), time_zone: str = "UTC") -> Query:
    tokens = _tokens(text)
    parser = _Parser(tokens, frozenset(indexed_properties), ZoneInfo(time_zone))
    test = parser.expression() if tokens and parser.peek_word() != "order" else (lambda row: True)
    order = parser.order_by()
    if parser.at < len(tokens):
        raise JqlError(f"Error in the JQL Query: unexpected {tokens[parser.at]!r}")
    return Query(test, order)


def _tokens(text: str) -> list[str]:
    tokens, at = [], 0
    while at < len(text.rstrip()):
        match = _TOKEN.match(text, at)
        if not match or match.end() == at:
            raise JqlError(f"Error in the JQL Query: the character {text[at:].strip()[:1]!r} is a reserved character")
        tokens.append(match.group().strip())
        at = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], indexed: frozenset[str], zone: tzinfo = UTC) -> None:
        self.tokens, self.at, self.indexed, self.zone = tokens, 0, indexed, zone

    def peek_word(self) -> str:
        return self.tokens[self.at].lower() if self.at < len(self.tokens) else ""

    def take(self) -> str:
        if self.at >= len(self.tokens):
            raise JqlError("Error in the JQL Query: the query ends too early")
        self.at += 1
        return self.tokens[self.at - 1]

    def expression(self) -> Test:
        terms = [self.conjunction()]
        while self.peek_word() == "or":
            self.take()
            terms.append(self.conjunction())
        return lambda row: any(t(row) for t in terms)

    def conjunction(self) -> Test:
        terms = [self.unary()]
        while self.peek_word() == "and":
            self.take()
            terms.append(self.unary())
        return lambda row: all(t(row) for t in terms)

    def unary(self) -> Test:
        if self.peek_word() == "not":
            self.take()
            inner = self.unary()
            return lambda row: not inner(row)
        if self.peek_word() == "(":
            self.take()
            inner = self.expression()
            if self.take() != ")":
                raise JqlError("Error in the JQL Query: expecting ')'")
            return inner
        return self.clause()

    def clause(self) -> Test:
        field = _field(self.take(), self.indexed)
        op = self.take().lower()
        if op == "not" or (op == "is" and self.peek_word() == "not"):
            op += " " + self.take().lower()
        if op in ("is", "is not"):
            if self.take().lower() not in ("empty", "null"):
                raise JqlError("Error in the JQL Query: expecting EMPTY after IS")
            empty = op == "is"
            return lambda row: (not row.get(field)) == empty
        if op in ("in", "not in"):
            values = self.values()

            def inside(row: Row) -> bool:
                return any(_equal(field, row.get(field), v) for v in values)

            return inside if op == "in" else (lambda row: not inside(row))
        value = _literal(self.take())
        if op in (">=", ">", "<=", "<"):
            return _date_test(field, op, value, self.zone)
        if op == "=":
            return lambda row: _equal(field, row.get(field), value)
        if op == "!=":
            return lambda row: not _equal(field, row.get(field), value)
        if op in ("~", "!~"):

            def contains(row: Row) -> bool:
                return value.lower().strip("*") in _text(row.get(field)).lower()

            return contains if op == "~" else (lambda row: not contains(row))
        raise JqlError(f"Error in the JQL Query: the operator {op!r} is not supported here")

    def values(self) -> list[str]:
        if self.take() != "(":
            raise JqlError("Error in the JQL Query: expecting '(' after IN")
        values = [_literal(self.take())]
        while self.peek_word() == ",":
            self.take()
            values.append(_literal(self.take()))
        if self.take() != ")":
            raise JqlError("Error in the JQL Query: expecting ')'")
        return values

    def order_by(self) -> tuple[tuple[str, bool], ...]:
        if self.peek_word() != "order":
            return ()
        self.take()
        if self.take().lower() != "by":
            raise JqlError("Error in the JQL Query: expecting BY after ORDER")
        order = []
        while True:
            field = _field(self.take(), self.indexed)
            descending = False
            if self.peek_word() in ("asc", "desc"):
                descending = self.take().lower() == "desc"
            order.append(("key_number" if field == "key" else field, descending))
            if self.peek_word() != ",":
                return tuple(order)
            self.take()


_FIELDS = frozenset(
    {"project", "key", "issuetype", "status", "statuscategory", "labels", "summary", "text"}
    | {"resolution", "priority", "created", "updated"}
)
_ALIASES = {"type": "issuetype", "issuekey": "key", "id": "key", "statuscategory": "statusCategory"}


def _field(token: str, indexed: frozenset[str]) -> str:
    name = _literal(token)
    if name.lower().startswith("issue.property["):
        key = name[len("issue.property[") : name.index("]")]
        if key in indexed:
            return name
    elif name.lower() in _FIELDS:
        return _ALIASES.get(name.lower(), name.lower())
    elif name.lower() in _ALIASES:
        return _ALIASES[name.lower()]
    raise JqlError(f"Field '{name}' does not exist or you do not have permission to view it.")


_DATES = frozenset({"created", "updated"})
_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")


def _date_test(field: str, op: str, value: str, zone: tzinfo = UTC) -> Test:
    if field not in _DATES:
        raise JqlError(f"Error in the JQL Query: the operator {op!r} is not supported by the field {field!r}")
    for form in _DATE_FORMATS:
        try:
            at = int(datetime.strptime(value, form).replace(tzinfo=zone).timestamp() * 1000)
            break
        except ValueError:
            continue
    else:
        raise JqlError(
            f"Date value '{value}' for field '{field}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm',"
            " 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
        )
    compare = {">=": at.__le__, ">": at.__lt__, "<=": at.__ge__, "<": at.__gt__}[op]
    return lambda row: isinstance(row.get(field), int) and compare(row[field])


def _literal(token: str) -> str:
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _equal(field: str, have: Any, want: str) -> bool:
    if field == "statusCategory":
        want = _CATEGORIES.get(want.lower(), want.lower())
    sensitive = field.startswith(_CASE_SENSITIVE)
    values = have if isinstance(have, list) else [have]
    return any(v is not None and (str(v) == want if sensitive else str(v).lower() == want.lower()) for v in values)


def _text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value or "")


def _by(name: str) -> Callable[[Row], tuple[int, Any]]:
    return lambda row: _sortable(row.get(name))


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float):
        return (0, value)
    return (1, _text(value))
