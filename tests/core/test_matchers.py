"""Linear-time matchers: RE2 regexes in Go's syntax, bounded patterns and values, a parser without backtracking."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core import config
from bridge.core.errors import ConfigError
from bridge.core.matchers import MAX_MATCHERS, MAX_PATTERN, MAX_VALUE, compile_regex, parse_matchers

HOSTILE_VALUE = "a" * 65_536  # a sender's label value may be this long (and longer)


def regex(name: str, pattern: str) -> str:
    """The matcher `name=~"pattern"`, quoted as Alertmanager's syntax wants (backslashes and quotes escaped)."""
    return f'{name}=~"{pattern.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'


@pytest.mark.parametrize("pattern", ["(a+)+b", "(a|aa)+b", "(a*)*b", "(.*a){20}b", "(a|a?)+b"])
def test_catastrophic_patterns_are_accepted_and_answer(pattern: str) -> None:
    """Patterns that backtrack exponentially in Python's `re` compile and answer at once on a long value."""
    (matcher,) = parse_matchers(regex("alertname", pattern))
    assert matcher.matches({"alertname": HOSTILE_VALUE}) is False
    assert matcher.matches({"alertname": "a" * 25 + "b"}) is True


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("a{99999999999}", "invalid repeat count"),  # C++ RE2 alone would read it as text; Go refuses it
        ("a{1001}", "repeat"),
        ("a{2,1001}", "invalid repeat count"),
        (r"(a)\1", "invalid escape"),  # back-references: not in RE2
        ("(?=a)a", "invalid perl operator"),  # look-ahead
        ("(?<!a)b", "invalid"),  # look-behind
        (r"\pL{1000}", "too large"),  # a Unicode class repeated: past the compile's memory bound
        (".{1000}.{1000}", "too large"),  # 16,000 RE2 instructions
        ("x" * (MAX_PATTERN + 1), "at most"),
        ("(", "missing"),
    ],
)
def test_patterns_beyond_re2_or_the_bounds_are_refused(pattern: str, why: str) -> None:
    """What RE2 cannot do in linear time, or what would make one match too costly, is a ValueError saying why."""
    with pytest.raises(ValueError, match=why):
        parse_matchers(regex("alertname", pattern))


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("[[:alpha:]]+", "disk", True),
        (r"\pL+", "ディスク", True),
        ("(?i)CRIT.*", "critical", True),
        ("[{]9999}", "{9999}", True),  # a brace in a bracket is a member, then text: no repeat
        (r"a\{99999999999}", "a{99999999999}", True),  # an escaped brace is text
        ("crit", "critical", False),  # anchored at both ends
    ],
)
def test_re2_syntax_as_alertmanager_reads_it(pattern: str, value: str, matches: bool) -> None:
    """POSIX classes, Unicode classes and flags are Go's; a regex is anchored at both ends."""
    (matcher,) = parse_matchers(regex("a", pattern))
    assert matcher.matches({"a": value}) is matches


def test_a_regex_sees_the_first_max_value_characters() -> None:
    """Past MAX_VALUE characters a value is cut for regexes (so one match is bounded); equality sees it whole."""
    (prefix,) = parse_matchers('a=~"x.*"')
    (suffix,) = parse_matchers('a=~".*y"')
    (equal,) = parse_matchers(f'a="{"x" * (MAX_VALUE + 10)}"')
    long = "x" * (MAX_VALUE + 10)
    assert prefix.matches({"a": long + "y"})
    assert not suffix.matches({"a": long + "y"})
    assert suffix.matches({"a": "x" * (MAX_VALUE - 1) + "y"})
    assert equal.matches({"a": long}) and not equal.matches({"a": long[:-1]})


def test_a_compiled_regex_is_shared_and_bounded() -> None:
    """The same pattern compiles once; its size is RE2's program size."""
    assert compile_regex("critical|major") is compile_regex("critical|major")
    assert 0 < compile_regex("critical|major").size < 100


@pytest.mark.parametrize(
    "text",
    [
        "a=" + " " * 65_536 + '"',  # the lazy parser took 5 s for 1,000 spaces, 275 s for 4,000
        'a="' + "x" * 65_536,
        'a=~"' + "\\" * 65_537,
        "{" + 'a="b",' * (MAX_MATCHERS + 1) + "}",
    ],
)
def test_the_matcher_parser_refuses_hostile_text_without_backtracking(text: str) -> None:
    """Unterminated values, runs of spaces and overlong lists are refused (in linear time: the test would hang)."""
    with pytest.raises(ValueError):
        parse_matchers(text)


def test_a_catastrophic_route_regex_is_a_config_error(tmp_path: Path) -> None:
    """A route whose regex RE2 refuses is a ConfigError at its key, so the bridge does not start with it."""
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "sources:\n  am: {kind: alertmanager}\n"
        "desks:\n  snow: {kind: servicenow, url: 'http://127.0.0.1:1', user: u, password: p}\n"
        "routes:\n  - name: r\n    desk: snow\n    match:\n"
        '      - alertname=~"(a+)+b"\n'
        '      - instance=~"a{99999999999}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load([path])
    assert caught.value.path == "routes[0].match[1]", str(caught.value)
    assert "invalid repeat count" in str(caught.value)
