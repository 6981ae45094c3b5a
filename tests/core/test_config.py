"""Mappings: loading, errors with file/path/line, secrets, durations, matchers, routing, check-config."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.core import config
from bridge.core.config import MappingConfig, parse_duration
from bridge.core.errors import ConfigError
from bridge.core.matchers import Op, parse_matchers
from bridge.core.models import Alert, stable_hash
from bridge.core.routing import Router
from tests.conftest import ROOT

EXAMPLE = ROOT / "bridge" / "samples" / "example.yaml"  # packaged: the default mapping

BASE = """\
sources:
  alertmanager:
    kind: alertmanager
    secret: ${AM_TOKEN:-}
desks:
  snow:
    kind: servicenow
    url: https://acme.service-now.com
    user: bridge
    password: ${SNOW_PASSWORD:-pw}
routes:
  - name: db
    sources: [alertmanager]
    match:
      - team="db"
      - severity=~"critical|major"
    desk: snow
    correlate:
      by: ["{{ labels.alertname }}", "{{ labels.instance | default('') }}"]
    lifecycle:
      resolve_after: 5m
    ticket:
      fields:
        short_description: "{{ name }} on {{ resource }}"
"""


def write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    """1-based number of the one line that contains `needle`."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def test_example_mapping_loads_with_defaults() -> None:
    """The packaged example mapping loads with no environment, pointing at the local simulator."""
    loaded = config.load([EXAMPLE], env={})
    desk = loaded.desks["servicenow"]
    assert (desk.url, desk.user, desk.password.get_secret_value()) == ("http://127.0.0.1:8081", "admin", "admin")
    assert loaded.sources["alertmanager"].secret_value() == ""
    route = loaded.routes[0]
    assert (route.name, route.sources, route.desk) == ("prometheus", ["alertmanager"], "servicenow")
    assert (route.lifecycle.resolve_after, route.lifecycle.reopen_within) == (300.0, 3600.0)


def test_example_mapping_takes_servicenow_settings_from_the_environment() -> None:
    """SERVICENOW_* and ALERTMANAGER_TOKEN from `env` replace the defaults."""
    env = {
        "SERVICENOW_URL": "https://acme.service-now.com",
        "SERVICENOW_USER": "svc-bridge",
        "SERVICENOW_PASSWORD": "pa$$word",
        "ALERTMANAGER_TOKEN": "tok-123",
    }
    loaded = config.load([EXAMPLE], env=env)
    desk = loaded.desks["servicenow"]
    assert (desk.url, desk.user) == ("https://acme.service-now.com", "svc-bridge")
    assert desk.password.get_secret_value() == "pa$$word"
    assert loaded.sources["alertmanager"].secret_value() == "tok-123"


def test_base_mapping_loads(tmp_path: Path) -> None:
    """The mapping the error cases below spoil is itself valid (so each case fails for its own reason)."""
    assert config.load([write(tmp_path, BASE)], env={}).routes[0].matchers()[1].op is Op.RE


# case -> (old text, new text, text on the line the error must name, dotted key path)
BAD = {
    "unknown route key": ("    desk: snow\n", "    desk: snow\n    colour: red\n", "colour", "routes[0].colour"),
    "unknown source key": (
        "    kind: alertmanager\n",
        "    kind: alertmanager\n    secrte: x\n",
        "secrte",
        "sources.alertmanager.secrte",
    ),
    "unknown desk key": ("    user: bridge\n", "    user: bridge\n    usr: x\n", "usr:", "desks.snow.usr"),
    "unknown top-level key": ("routes:\n", "route:\n  - {}\nroutes:\n", "route:", "route"),
    "bad matcher": ('      - team="db"\n', '      - team~"db"\n', 'team~"db"', "routes[0].match[0]"),
    "bad matcher regex": ('severity=~"critical|major"', 'severity=~"(critical"', "(critical", "routes[0].match[1]"),
    "template does not compile": ("{{ labels.alertname }}", "{{ labels.alertname ", "by:", "routes[0].correlate.by[0]"),
    "ticket template does not compile": (
        "{{ name }} on",
        "{% if name %} on",
        "short_description",
        "routes[0].ticket.fields.short_description",
    ),
    "unknown desk reference": ("    desk: snow\n", "    desk: jira\n", "desk: jira", "routes[0].desk"),
    "unknown source reference": ("[alertmanager]", "[alertmanager, nagios]", "sources: [", "routes[0].sources[1]"),
    "bad duration": (
        "resolve_after: 5m",
        "resolve_after: 5 minutes",
        "resolve_after",
        "routes[0].lifecycle.resolve_after",
    ),
    "unknown source kind": ("kind: alertmanager", "kind: prometheus", "kind: prometheus", "sources.alertmanager.kind"),
    "missing variable": ("${SNOW_PASSWORD:-pw}", "${SNOW_PASSWORD}", "password:", "desks.snow.password"),
    "missing password_file": (
        "    password: ${SNOW_PASSWORD:-pw}\n",
        "    password_file: /nonexistent/snow.pw\n",
        "password_file",
        "desks.snow.password_file",
    ),
    "duplicate route name": ("", "  - name: db  # again\n    desk: snow\n", "# again", "routes[1].name"),
    "missing route key": ("    desk: snow\n", "", "- name: db", "routes[0].desk"),
    "missing desk key": ("    url: https://acme.service-now.com\n", "", "  snow:", "desks.snow.url"),
    "bad desk value": ("url: https://acme.service-now.com", "url: ftp://acme", "url: ftp", "desks.snow.url"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_mapping_names_file_path_and_line(tmp_path: Path, case: str) -> None:
    """Every kind of mistake is a ConfigError naming the file, the dotted key path and its line, once."""
    old, new, needle, dotted = BAD[case]
    text = BASE + new if old == "" else BASE.replace(old, new, 1)
    assert text != BASE
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load([path], env={})
    line = line_of(text, needle)
    error = caught.value
    assert (error.file, error.path, error.line) == (str(path), dotted, line), str(error)
    assert str(error).startswith(f"{path}:{line}: {dotted}: "), str(error)
    assert len(error.problems) == 1, str(error)  # one mistake, one problem (a missing variable is not also a bad value)


# case -> (old text, new text, the message the one problem must end with)
NEAR_MISSES = {
    "route key": (
        "    desk: snow\n",
        "    desk: snow\n    continu: true\n",
        "unknown key 'continu'; did you mean 'continue'?",
    ),
    "lifecycle key": (
        "resolve_after: 5m",
        "reopen_witin: 5m",
        "unknown key 'reopen_witin'; did you mean 'reopen_within'?",
    ),
    "secret file key": (
        "    password: ${SNOW_PASSWORD:-pw}\n",
        "    password: pw\n    pasword_file: /x\n",
        "unknown key 'pasword_file'; did you mean 'password_file'?",
    ),
    "top-level key": ("routes:\n", "desk:\n  x: 1\nroutes:\n", "unknown top-level key 'desk'; did you mean 'desks'?"),
    "source kind": ("kind: alertmanager", "kind: alertmanagr", "did you mean 'alertmanager'? (known: alertmanager, "),
    "desk kind": ("kind: servicenow", "kind: servicenw", "unknown desk kind 'servicenw'; did you mean 'servicenow'?"),
    "desk reference": ("    desk: snow\n", "    desk: snwo\n", "route 'db': unknown desk 'snwo'; did you mean 'snow'?"),
    "source reference": (
        "[alertmanager]",
        "[alertmanagr]",
        "route 'db': unknown source 'alertmanagr'; did you mean 'alertmanager'?",
    ),
}


@pytest.mark.parametrize("case", list(NEAR_MISSES))
def test_a_near_miss_gets_did_you_mean(tmp_path: Path, case: str) -> None:
    """An unknown key, kind or name close to a valid one says which one was probably meant, in plain words."""
    old, new, ending = NEAR_MISSES[case]
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        config.load([path], env={})
    (problem,) = caught.value.problems
    assert ending in problem.message, problem.message
    assert "Extra inputs" not in str(caught.value) and "Input tag" not in str(caught.value)


def test_an_unknown_key_far_from_any_valid_one_gets_no_guess(tmp_path: Path) -> None:
    """`colour` under a route is reported as unknown without a made-up suggestion."""
    path = write(tmp_path, BASE.replace("    desk: snow\n", "    desk: snow\n    colour: red\n"))
    with pytest.raises(ConfigError) as caught:
        config.load([path], env={})
    assert caught.value.message == "unknown key 'colour'"


SEVERAL = """\
sources:
  alertmanager:
    kind: alertmanager
    secrte: x
desks:
  snow:
    kind: servicenow
    url: ftp://acme
    user: bridge
    password: ${SNOW_PASSWORD}
limit:
  snow: {per_second: 1}
routes:
  - name: db
    desk: snwo
    sources: [alertmanager, grafana]
    lifecycle:
      reopen_witin: 1h
      resolve_afer: 5m
  - name: db  # again
    desk: snow
    match: ['team~"db"']
"""
# SEVERAL's mistakes in line order: (text on the line, dotted key path, what the message says)
SEVERAL_PROBLEMS = [
    ("secrte: x", "sources.alertmanager.secrte", "unknown key 'secrte'; did you mean 'secret'?"),
    ("url: ftp", "desks.snow.url", "must be an http(s) URL"),
    ("password: ${", "desks.snow.password", "environment variable SNOW_PASSWORD is not set"),
    ("limit:", "limit", "unknown top-level key 'limit'; did you mean 'limits'?"),
    ("desk: snwo", "routes[0].desk", "route 'db': unknown desk 'snwo'; did you mean 'snow'?"),
    ("sources: [", "routes[0].sources[1]", "route 'db': unknown source 'grafana'"),
    ("reopen_witin", "routes[0].lifecycle.reopen_witin", "unknown key 'reopen_witin'; did you mean 'reopen_within'?"),
    ("resolve_afer", "routes[0].lifecycle.resolve_afer", "unknown key 'resolve_afer'; did you mean 'resolve_after'?"),
    ("# again", "routes[1].name", "route name 'db' is used twice"),
    ('team~"db"', "routes[1].match[0]", "bad matcher"),
]


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Ten mistakes in one file: one ConfigError lists all ten in line order, as `file:line: key.path: message`."""
    path = write(tmp_path, SEVERAL)
    with pytest.raises(ConfigError) as caught:
        config.load([path], env={})
    problems = caught.value.problems
    found = [(p.file, p.line, p.path) for p in problems]
    assert found == [(str(path), line_of(SEVERAL, needle), dotted) for needle, dotted, _ in SEVERAL_PROBLEMS]
    lines = str(caught.value).splitlines()
    assert lines[0] == "10 problems:"
    for (_, _, message), problem, text in zip(SEVERAL_PROBLEMS, problems, lines[1:], strict=True):
        assert message in problem.message, problem
        assert text == f"{path}:{problem.line}: {problem.path}: {problem.message}"


def test_mistakes_in_several_files_each_name_their_own_file(tmp_path: Path) -> None:
    """Problems from two files come in one error, each with its own file and line, in file order."""
    first = write(tmp_path, BASE.replace("resolve_after: 5m", "resolve_afer: 5m"), "base.yaml")
    second = write(tmp_path, "routes:\n  - name: web\n    desk: jira\n", "web.yaml")
    with pytest.raises(ConfigError) as caught:
        config.load([first, second], env={})
    located = [(p.file, p.path, p.line) for p in caught.value.problems]
    assert located == [
        (str(first), "routes[0].lifecycle.resolve_afer", line_of(BASE, "resolve_after")),
        (str(second), "routes[0].desk", 3),
    ]


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    """A YAML syntax error is a ConfigError with the file and the line of the problem."""
    text = BASE.replace("    user: bridge\n", "    user: bridge: x\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        config.load([path], env={})
    assert (caught.value.file, caught.value.line) == (str(path), line_of(text, "user: bridge: x"))


def test_variables_are_substituted_and_defaults_apply(tmp_path: Path) -> None:
    """`${VAR}` takes the environment's value, `${VAR:-x}` its default when unset, inside longer strings too."""
    text = BASE.replace("https://acme.service-now.com", "https://${SNOW_HOST}.service-now.com")
    loaded = config.load([write(tmp_path, text)], env={"SNOW_HOST": "globex", "AM_TOKEN": "t0k"})
    assert loaded.desks["snow"].url == "https://globex.service-now.com"
    assert loaded.desks["snow"].password.get_secret_value() == "pw"
    assert loaded.sources["alertmanager"].secret_value() == "t0k"


def test_password_file_and_secret_file_are_read(tmp_path: Path) -> None:
    """`password_file` and `secret_file` are read (trailing newline dropped) into the secret fields."""
    (tmp_path / "pw").write_text("hunter2\n")
    (tmp_path / "tok").write_text("am-token\n")
    text = BASE.replace("    password: ${SNOW_PASSWORD:-pw}\n", f"    password_file: {tmp_path / 'pw'}\n")
    text = text.replace("    secret: ${AM_TOKEN:-}\n", "    secret_file: ${TOKEN_DIR}/tok\n")
    loaded = config.load([write(tmp_path, text)], env={"TOKEN_DIR": str(tmp_path)})
    assert loaded.desks["snow"].password.get_secret_value() == "hunter2"
    assert loaded.sources["alertmanager"].secret_value() == "am-token"


SPLIT_SOURCES, _, SPLIT_ROUTES = BASE.partition("routes:\n")


def test_several_files_merge(tmp_path: Path) -> None:
    """Sources and desks from one file, routes from others: one mapping, routes in file order."""
    first = write(tmp_path, SPLIT_SOURCES, "sources.yaml")
    second = write(tmp_path, "routes:\n" + SPLIT_ROUTES, "db.yaml")
    third = write(tmp_path, "routes:\n  - name: rest\n    desk: snow\n", "rest.yaml")
    loaded = config.load([first, second, third], env={})
    assert [r.name for r in loaded.routes] == ["db", "rest"]
    assert list(loaded.desks) == ["snow"]


def test_an_error_in_a_later_file_names_that_file_and_its_own_line(tmp_path: Path) -> None:
    """Merged route indices are mapped back: the error names the second file, its index and line."""
    first = write(tmp_path, BASE, "base.yaml")
    text = "# team web\nroutes:\n  - name: web\n    desk: jira\n"
    second = write(tmp_path, text, "web.yaml")
    with pytest.raises(ConfigError) as caught:
        config.load([first, second], env={})
    assert (caught.value.file, caught.value.path, caught.value.line) == (str(second), "routes[0].desk", 4)


def test_a_source_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    """The same source name in two files is refused, naming the second file."""
    first = write(tmp_path, BASE, "a.yaml")
    second = write(tmp_path, "sources:\n  alertmanager:\n    kind: alertmanager\n", "b.yaml")
    with pytest.raises(ConfigError, match="defined twice") as caught:
        config.load([first, second], env={})
    assert (caught.value.file, caught.value.path) == (str(second), "sources.alertmanager")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), (1.5, 1.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
     ("250ms", 0.25), ("1.5h", 5400.0), ("2d", 172800.0), (" 10s ", 10.0)],
)  # fmt: skip
def test_durations_parse(text: Any, seconds: float) -> None:
    """Durations are seconds as numbers, or Go-style unit strings."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "", "m", "5m30", "-5s", -1, "1h 30m", "5x", "abc", True, None])
def test_junk_durations_are_refused(text: Any) -> None:
    """Anything that is not a non-negative duration is a ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('team="db"', [("team", Op.EQ, "db")]),
        ('env!="dev"', [("env", Op.NE, "dev")]),
        ('severity=~"critical|major"', [("severity", Op.RE, "critical|major")]),
        ('job!~"node.*"', [("job", Op.NRE, "node.*")]),
        ("team=db", [("team", Op.EQ, "db")]),
        ('msg="say \\"hi\\"\\n\\\\"', [("msg", Op.EQ, 'say "hi"\n\\')]),
        ('a="x,y}"', [("a", Op.EQ, "x,y}")]),
        ('{a="b", c=~"d"}', [("a", Op.EQ, "b"), ("c", Op.RE, "d")]),
        ('{ a = "b" ,c!="d", }', [("a", Op.EQ, "b"), ("c", Op.NE, "d")]),
    ],
)
def test_matchers_parse(text: str, expected: list[tuple[str, Op, str]]) -> None:
    """Alertmanager matcher syntax: four operators, quoted values with escapes, `{...}` lists."""
    assert [(m.name, m.op, m.value) for m in parse_matchers(text)] == expected


@pytest.mark.parametrize(
    "text", ["team", '="db"', 'team~"db"', 'team=="db"', 'team="db', 'a="b" c="d"', '1a="b"', "", "{}",
             'a="b",,c="d"', 'sev=~"("', '{a="b"'],
)  # fmt: skip
def test_garbage_matchers_are_refused(text: str) -> None:
    """Anything that is not a matcher list is a ValueError, not a matcher that silently matches."""
    with pytest.raises(ValueError):
        parse_matchers(text)


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ('severity=~"crit"', {"severity": "critical"}, False),
        ('severity=~"crit"', {"severity": "crit"}, True),
        ('severity=~"critical|major"', {"severity": "major"}, True),
        ('severity=~"critical|major"', {"severity": "minor"}, False),
        ('severity!~"crit"', {"severity": "critical"}, True),
        ('env!="dev"', {}, True),
        ('env!="dev"', {"env": "dev"}, False),
        ('env=""', {}, True),
        ('team="db"', {"team": "DB"}, False),
    ],
)
def test_matchers_match_like_alertmanager(text: str, labels: dict[str, str], matches: bool) -> None:
    """Regexes are anchored at both ends; a missing label is the empty string."""
    (matcher,) = parse_matchers(text)
    assert matcher.matches(labels) is matches


# --- routing --------------------------------------------------------------------------------------


def router(*routes: dict[str, Any]) -> Router:
    return Router(
        MappingConfig.model_validate(
            {
                "sources": {"alertmanager": {"kind": "alertmanager"}, "prom-eu": {"kind": "alertmanager"}},
                "desks": {"snow": {"kind": "servicenow", "url": "https://x.service-now.com", "user": "u",
                                   "password": "p"}},
                "routes": [{"desk": "snow", **r} for r in routes],
            }
        )
    )  # fmt: skip


def make_alert(identity: str = "fp1", source: str = "alertmanager", **labels: str) -> Alert:
    labels = {"alertname": "DiskFull", "instance": "db-1", **labels}
    return Alert(
        source=source,
        kind="alertmanager",
        identity=identity,
        name=labels["alertname"],
        labels=labels,
        received_at=datetime(2024, 5, 14, tzinfo=UTC),
    )


def test_first_matching_route_wins() -> None:
    """Routes are tried in order and the first that matches takes the alert alone."""
    r = router({"name": "db", "match": ['team="db"']}, {"name": "any"}, {"name": "never"})
    assert [x.route.name for x in r.route(make_alert(team="db"))] == ["db"]
    assert [x.route.name for x in r.route(make_alert(team="web"))] == ["any"]


def test_continue_routes_to_several() -> None:
    """`continue: true` lets the alert go on to the next matching route as well."""
    r = router({"name": "audit", "continue": True}, {"name": "db", "match": ['team="db"']}, {"name": "any"})
    assert [x.route.name for x in r.route(make_alert(team="db"))] == ["audit", "db"]
    assert [x.route.name for x in r.route(make_alert(team="web"))] == ["audit", "any"]


def test_no_matching_route_gives_nothing() -> None:
    """An alert no route matches is routed nowhere (the engine dead-letters it)."""
    assert router({"name": "db", "match": ['team="db"']}).route(make_alert(team="web")) == []


def test_sources_restrict_a_route() -> None:
    """A route with `sources:` only sees alerts from those sources."""
    r = router({"name": "eu", "sources": ["prom-eu"]}, {"name": "any"})
    assert [x.route.name for x in r.route(make_alert(source="prom-eu"))] == ["eu"]
    assert [x.route.name for x in r.route(make_alert(source="alertmanager"))] == ["any"]


def test_correlate_by_renders_the_key_and_equal_keys_share_an_incident() -> None:
    """correlate.by templates form the key; same key -> same base, another key -> another base."""
    r = router({"name": "fs", "correlate": {"by": ["{{ labels.alertname }}", "{{ labels.instance }}"]}})
    (one,) = r.route(make_alert("fp1", device="/dev/sda1"))
    (two,) = r.route(make_alert("fp2", device="/dev/sdb1"))
    (other,) = r.route(make_alert("fp3", instance="db-2"))
    assert one.key == "DiskFull|db-1"
    assert one.base == two.base == f"fs:{stable_hash('DiskFull|db-1', length=12)}"
    assert other.base != one.base


def test_without_correlate_each_identity_is_its_own_incident() -> None:
    """No correlate.by: the key is source and identity, so two alerts are two incidents."""
    r = router({"name": "each"})
    (one,) = r.route(make_alert("fp1"))
    (two,) = r.route(make_alert("fp2"))
    assert (one.key, two.key) == ("alertmanager|fp1", "alertmanager|fp2")
    assert one.base != two.base


def test_identity_override_hashes_the_chosen_fields() -> None:
    """`identity: [name, labels.host]` replaces the source's identity with a hash of those fields only."""
    r = router({"name": "hosts", "identity": ["name", "labels.host"]})
    (one,) = r.route(make_alert("fp1", host="web-1", pid="17"))
    (two,) = r.route(make_alert("fp2", host="web-1", pid="99"))
    (other,) = r.route(make_alert("fp1", host="web-2"))
    assert one.identity == two.identity == stable_hash(["DiskFull", "web-1"])
    assert other.identity != one.identity


# --- bridge check-config ---------------------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_the_example() -> None:
    """`bridge check-config bridge/samples/example.yaml` exits 0 and says ok."""
    done = check_config(EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 12 source(s), 1 desk(s), 4 route(s)")


def test_check_config_refuses_a_bad_file_with_its_location(tmp_path: Path) -> None:
    """A bad mapping exits non-zero with `file:line: path: message` on stderr."""
    text = BASE.replace("    desk: snow\n", "    desk: jira\n")
    path = write(tmp_path, text)
    done = check_config(path)
    assert done.returncode != 0
    assert f"{path}:{line_of(text, 'desk: jira')}: routes[0].desk: route 'db': unknown desk 'jira'" in done.stderr
    assert done.stdout == ""


def test_check_config_prints_every_problem(tmp_path: Path) -> None:
    """`bridge check-config` on a file with several mistakes prints one line per mistake, no traceback."""
    path = write(tmp_path, SEVERAL)
    done = check_config(path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{path}:{line_of(SEVERAL, 'reopen_witin')}: routes[0].lifecycle.reopen_witin: unknown key" in done.stderr
    assert sum(line.startswith(f"{path}:") for line in done.stderr.splitlines()) == 10, done.stderr


def test_example_mapping_enables_every_source_kind() -> None:
    """The example mapping listens for every source kind at /webhook/<kind>, each with its own optional secret."""
    import re

    from bridge.core.plugins import sources

    SOURCES = sources()

    example = EXAMPLE
    open_config = config.load([example], env={})
    assert {name: s.kind for name, s in open_config.sources.items()} == {kind: kind for kind in SOURCES}
    assert all(s.secret_value() == "" for s in open_config.sources.values())
    names = re.findall(r"secret: \$\{(\w+):-\}", example.read_text().split("\nheartbeats:")[0])
    assert len(set(names)) == len(SOURCES)  # one variable per source
    secured = config.load([example], env={name: f"secret-of-{name}" for name in names})
    assert sorted(s.secret_value() for s in secured.sources.values()) == sorted(f"secret-of-{n}" for n in names)
