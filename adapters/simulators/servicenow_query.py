"""ServiceNow encoded queries (`sysparm_query`), the subset a desk client uses: parse, filter, sort.

Grammar followed (ServiceNow docs, "Encoded query strings", and the Table API's `sysparm_query`:
https://www.servicenow.com/docs/r/api-reference/rest-apis/c_TableAPI.html): terms joined by `^` (AND); a
term starting `OR` is OR-ed with the term before it (OR binds tighter than AND); `ORDERBY<field>` /
`ORDERBYDESC<field>` sort; operators `=`, `!=`, `IN`, `NOT IN`, `LIKE`, `NOT LIKE`, `STARTSWITH`,
`ENDSWITH`, `ISEMPTY`, `ISNOTEMPTY`, `<`, `<=`, `>`, `>=`. Names and values are case-sensitive. A
condition on an unknown field, or one that cannot be read, is silently dropped and the query runs with
the rest, as on an instance without `glide.invalid_query.returns_no_rows`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

_CONDITION = re.compile(
    r"([a-z_][a-z0-9_.]*)"
    r"(NOT IN|NOT LIKE|ISNOTEMPTY|ISEMPTY|STARTSWITH|ENDSWITH|LIKE|IN|!=|<=|>=|=|<|>)"
    r"(.*)",
    re.DOTALL,
)

_TESTS: dict[str, Callable[[str, str], bool]] = {
    "=": lambda have, want: have == want,
    "!=": lambda have, want: have != want,
    "IN": lambda have, want: have in want.split(","),
    "NOT IN": lambda have, want: have not in want.split(","),
    "LIKE": lambda have, want: want in have,
    "NOT LIKE": lambda have, want: want not in have,
    "STARTSWITH": lambda have, want: have.startswith(want),
    "ENDSWITH": lambda have, want: have.endswith(want),
    "ISEMPTY": lambda have, _: have == "",
    "ISNOTEMPTY": lambda have, _: have != "",
    "<": lambda have, want: have < want,
    "<=": lambda have, want: have <= want,
    ">": lambda have, want: have > want,
    ">=": lambda have, want: have >= want,
}


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    operator: str
    value: str

    def matches(self, row: Mapping[str, str]) -> bool:
        return _TESTS[self.operator](row.get(self.field, ""), self.value)


@dataclass(frozen=True, slots=True)
class Query:
    """AND of OR-groups, then a sort order (field, descending)."""

    groups: tuple[tuple[Condition, ...], ...] = ()
    order: tuple[tuple[str, bool], ...] = ()

    def matches(self, row: Mapping[str, str]) -> bool:
        return all(any(c.matches(row) for c in group) for group in self.groups)

    def select(self, rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
        """The matching rows, sorted; ties keep creation order in the direction of the first key."""
        found = [row for row in rows if self.matches(row)]
        if not self.order:
            return found
        if self.order[0][1]:
            found.reverse()
        for name, descending in reversed(self.order):
            found.sort(key=_field(name), reverse=descending)
        return found


def parse(text: str, known: Collection[str]) -> Query:
    """Read an encoded query; terms on fields outside `known` are dropped."""
    groups: list[list[Condition]] = []
    order: list[tuple[str, bool]] = []
    last_dropped = True  # an OR term after a dropped term starts its own group
    for term in text.split("^") if text else []:
        if term.startswith("ORDERBYDESC") or term.startswith("ORDERBY"):
            descending = term.startswith("ORDERBYDESC")
            name = term[11:] if descending else term[7:]
            if name in known:
                order.append((name, descending))
            continue
        alternative = term.startswith("OR")
        condition = _condition(term[2:] if alternative else term, known)
        if condition is not None and alternative and not last_dropped:
            groups[-1].append(condition)
        elif condition is not None:
            groups.append([condition])
        last_dropped = condition is None
    return Query(tuple(tuple(g) for g in groups), tuple(order))


def _condition(term: str, known: Collection[str]) -> Condition | None:
    match = _CONDITION.fullmatch(term)
    if match is None or match[1] not in known:
        return None
    return Condition(match[1], match[2], match[3])


def _field(name: str) -> Callable[[Mapping[str, str]], str]:
    return lambda row: row.get(name, "")
