"""The loop back's mapping: the desk's `sync:`, the route's `sync:` and a source's `upstream:`, each mistake a
ConfigError naming the file, the key and its line; a valid one carried to the Lua step in the policy JSON."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.core import config
from bridge.core.errors import ConfigError
from bridge.core.routing import policy_json
from tests.core.test_config import BASE, line_of, write

VALID = (
    BASE.replace(
        "    secret: ${AM_TOKEN:-}\n", "    secret: ${AM_TOKEN:-}\n    upstream:\n      url: https://am.example.com\n"
    ).replace(
        "    lifecycle:\n",
        "    sync:\n      on_desk_resolve: new_ticket\n      on_desk_cancel_silence: 2h\n    lifecycle:\n",
    )
    + "sync:\n  snow:\n    secret: s3cret\n    poll: 60s\n    integration_user: svc_bridge\n"
)

# case -> (old text, new text, the line's text, the dotted path)
UPSTREAM = "      url: https://am.example.com\n"
BAD = {
    "sync of an unknown desk": ("sync:\n  snow:", "sync:\n  jira:", "  jira:", "sync.jira"),
    "bad poll": ("poll: 60s", "poll: often", "poll: often", "sync.snow.poll"),
    "bad auth": ("integration_user: svc_bridge", "auth: basic", "auth: basic", "sync.snow.auth"),
    "unknown desk sync key": (
        "integration_user: svc_bridge",
        "integration: x",
        "integration: x",
        "sync.snow.integration",
    ),
    "bad route policy": (
        "on_desk_resolve: new_ticket",
        "on_desk_resolve: close",
        "on_desk_resolve",
        "routes[0].sync.on_desk_resolve",
    ),
    "bad silence duration": (
        "on_desk_cancel_silence: 2h",
        "on_desk_cancel_silence: -1",
        "on_desk_cancel_silence",
        "routes[0].sync.on_desk_cancel_silence",
    ),
    "bad upstream option": (
        UPSTREAM,
        UPSTREAM + "      colour: red\n",
        "colour",
        "sources.alertmanager.upstream.colour",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_mistake_names_file_key_and_line(tmp_path: Path, case: str) -> None:
    """Each mistake in the loop back's sections is one ConfigError at its own key and line."""
    old, new, needle, dotted = BAD[case]
    assert old in VALID
    text = VALID.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load([path], env={})
    error = caught.value
    assert (error.path, error.line) == (dotted, line_of(text, needle)), str(error)


def test_an_upstream_for_a_kind_without_a_plugin_is_refused(tmp_path: Path) -> None:
    """`upstream:` on a source whose kind no upstream plugin answers is an error at that key."""
    text = VALID.replace("    kind: alertmanager\n", "    kind: grafana\n", 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="no upstream plugin") as caught:
        config.load([path], env={})
    assert caught.value.path == "sources.alertmanager.upstream"


def test_the_route_policy_reaches_the_lua_step(tmp_path: Path) -> None:
    """The route's sync policy is in its policy JSON (times in ms), the desk's sync and the upstream validated."""
    loaded = config.load([write(tmp_path, VALID)], env={})
    policy = orjson.loads(policy_json(loaded.routes[0], 60_000, 200))
    assert policy["sync"] == {"resolve": "new_ticket", "assign": "acknowledge", "cancel_silence": 7_200_000,
                              "comment": "ignore"}  # fmt: skip
    assert loaded.sync["snow"].poll == 60.0 and loaded.sync["snow"].integration_user == "svc_bridge"
    assert loaded.sources["alertmanager"].upstream_settings() is not None
    assert "s3cret" in loaded.secrets()
