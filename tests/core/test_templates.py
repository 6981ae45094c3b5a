"""Templates: the direct lookup of a plain `{{ a.b }}`, and the environment's plain-dict globals,
render exactly what Jinja renders."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.core import templates
from bridge.core.templates import compile_template, render

NAMES = st.sampled_from(["labels", "alert", "instance", "items", "keys", "get", "_x", "severity", "a", "b"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.dictionaries(NAMES, inner, max_size=4) | st.lists(inner, max_size=2))


def jinja_only(source: str, context: dict[str, Any]) -> str:
    try:
        return compile_template(source).render(context).strip()
    except Exception as exc:
        return f"<raised {type(exc).__name__}>"


def either(source: str, context: dict[str, Any]) -> str:
    try:
        return render(source, context)
    except ValueError as exc:
        return f"<raised {type(exc.__cause__).__name__}>"


@settings(max_examples=400)
@given(
    context=st.dictionaries(NAMES, VALUES, max_size=5),
    path=st.lists(NAMES, min_size=1, max_size=3),
    default=st.booleans(),
    spaces=st.sampled_from(["", " ", "  "]),
)
def test_plain_lookup_renders_what_jinja_renders(
    context: dict[str, Any], path: list[str], default: bool, spaces: str
) -> None:
    source = "{{" + spaces + ".".join(path) + (" | default('')" if default else "") + spaces + "}}"
    assert templates._plain_path(source) == tuple(path)  # the fast path is taken, or declines
    assert either(source, context) == jinja_only(source, context)


def test_plain_lookup_examples() -> None:
    context = {"labels": {"instance": " db-1:9100 ", "items": "x"}, "summary": None, "count": 3}
    assert render("{{ labels.instance }}", context) == "db-1:9100"
    assert render("{{ labels.missing | default('') }}", context) == ""
    assert render("{{ summary }}", context) == "None"  # as Jinja: None is not undefined
    assert render("{{ count }}", context) == "3"
    assert render("{{ labels.items }}", context) == jinja_only("{{ labels.items }}", context)  # dict.items
    assert templates._plain_path("{{ labels.instance }}-{{ count }}") is None  # more than one: Jinja


STOCK = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


def test_globals_as_a_plain_dict_render_what_stock_jinja_renders() -> None:
    """The environment copies its globals into each template as a dict, not a ChainMap: the same
    names resolve, a context value still shadows a global, and `{% set %}` stays in its render."""
    context = {"labels": {"severity": "critical"}, "range": "shadowed", "n": 3, "items": [1, 2]}
    sources = [
        "{{ {'critical': '1', 'major': '2'}.get(labels.severity, '3') }}",
        "{{ labels.missing | default(n) }} {{ range }}",
        "{% for i in items %}{{ loop.index }}:{{ i }} {% endfor %}",
        "{% set ns = namespace(total=0) %}{% for i in items %}{% set ns.total = ns.total + i %}{% endfor %}"
        "{{ ns.total }}",
        "{% set n = 9 %}{{ n }} {{ dict(a=1) }} {{ cycler('a', 'b').next() }}",
        "{{ lipsum(1, html=False) | length > 0 }} {{ joiner()() }}",
    ]
    no_range = {k: v for k, v in context.items() if k != "range"}
    for source in sources:
        for ctx in (context, no_range):
            expected = STOCK.from_string(source).render(ctx).strip()
            assert render(source, ctx) == expected, source
    assert render("{{ range(3) | list }}", {}) == "[0, 1, 2]"
    assert render("{{ n }}", context) == "3"  # the `{% set n = 9 %}` above did not leak
