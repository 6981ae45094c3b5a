"""Jira field values from the bridge's rendered strings: each field's JSON shape, and text as ADF for API v3.

A route's `ticket.fields` are strings keyed by Jira field ids (Jira Cloud platform REST API, "Create
issue": https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/). Each becomes
the shape Jira's create and edit screens take:

    summary, duedate, other text        the string
    description, environment (+ any     API v3: an Atlassian Document Format document (below);
      field in `rich_text_fields`)        API v2 and JSM requests: the string (wiki markup)
    priority, issuetype, resolution,    {"name": value}
      security
    project                             {"key": value}
    labels                              a list, split on commas and white space (labels have no spaces)
    components, fixVersions, versions   [{"name": ...}, ...], split on commas
    assignee, reporter                  Cloud {"accountId": value}; Data Center {"name": value}
    a field the desk lists in           JSON when the value is a JSON object or array (option fields:
      `json_fields` (customfield_10010)   {"value": "Sev 1"}), otherwise the string
    anything else                       the string, whatever it looks like: alert text that starts
                                        with `{` or `[` never becomes structure

ADF (https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/): blank lines
separate paragraphs, single line breaks become `hardBreak` nodes, and http(s) URLs carry a `link`
mark. Empty text is a document with no content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

RICH_TEXT = ("description", "environment")
_NAMED = frozenset({"priority", "issuetype", "resolution", "security"})
_LISTS_OF_NAMED = frozenset({"components", "fixVersions", "versions"})
_USERS = frozenset({"assignee", "reporter"})
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


def adf(text: str) -> dict[str, Any]:
    """A plain text as an ADF document."""
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text.strip().replace("\r\n", "\n")) if p.strip()]
    return {"type": "doc", "version": 1, "content": [_paragraph(p) for p in paragraphs]}


def adf_text(document: Any) -> str:
    """The plain text of an ADF document (paragraphs separated by blank lines), for reading back;
    whatever in it is not a node is skipped (a document from the network may be anything)."""
    if not isinstance(document, dict):
        return str(document or "")
    blocks = []
    content = document.get("content")
    for block in content if isinstance(content, list) else []:
        nodes = block.get("content") if isinstance(block, dict) else None
        parts: list[str] = [
            _node_text(node) for node in (nodes if isinstance(nodes, list) else []) if isinstance(node, dict)
        ]
        blocks.append("".join(parts))
    return "\n\n".join(blocks)


def _node_text(node: dict[str, Any]) -> str:
    if node.get("type") != "text":
        return "\n"
    text = node.get("text")
    return text if isinstance(text, str) else ""


def field_text(value: Any) -> str:
    """A field's JSON value as the string a route would have written (for comparing with it)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(field_text(v) for v in value)
    if isinstance(value, dict):
        if value.get("type") == "doc":
            return adf_text(value)
        for key in ("name", "value", "key", "accountId"):
            if key in value:
                return str(value[key])
        return orjson.dumps(value).decode()
    return str(value)


def labels(text: str) -> list[str]:
    return [label for label in re.split(r"[\s,]+", text) if label]


def jira_fields(
    fields: Mapping[str, str],
    *,
    adf_rich_text: bool,
    rich_text: Iterable[str] = RICH_TEXT,
    cloud: bool = True,
    json_fields: Iterable[str] = (),
) -> dict[str, Any]:
    """Rendered strings keyed by field id → the JSON values Jira expects for them; only the fields in
    `json_fields` are read as JSON."""
    rich = frozenset(rich_text)
    as_json = frozenset(json_fields)
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in rich:
            out[name] = adf(value) if adf_rich_text else value
        elif name in _NAMED:
            out[name] = {"name": value}
        elif name == "project":
            out[name] = {"key": value}
        elif name == "labels":
            out[name] = labels(value)
        elif name in _LISTS_OF_NAMED:
            out[name] = [{"name": part.strip()} for part in value.split(",") if part.strip()]
        elif name in _USERS:
            out[name] = {"accountId": value} if cloud else {"name": value}
        elif name in as_json:
            out[name] = _json_or_text(value)
        else:
            out[name] = value
    return out


def jql_string(value: str) -> str:
    """A JQL string literal: double quotes, with `"` and `\\` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _paragraph(text: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            content.append({"type": "hardBreak"})
        content.extend(_inline(line))
    return {"type": "paragraph", "content": content}


def _inline(line: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    at = 0
    for match in _URL.finditer(line):
        if match.start() > at:
            nodes.append({"type": "text", "text": line[at : match.start()]})
        link = {"type": "link", "attrs": {"href": match.group()}}
        nodes.append({"type": "text", "text": match.group(), "marks": [link]})
        at = match.end()
    if at < len(line):
        nodes.append({"type": "text", "text": line[at:]})
    return nodes  # ADF text nodes must not be empty: an empty line is just the hardBreak


def _json_or_text(value: str) -> Any:
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return value
        if isinstance(parsed, dict | list):
            return parsed
    return value
