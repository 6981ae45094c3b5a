"""Atlassian Document Format as the simulated Jira checks it: the node rules of the ADF schema, a subset.

https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/ and the published
JSON schema (http://go.atlassian.com/adf-json-schema): a `doc` of version 1 holds block nodes
(paragraph, heading, codeBlock, blockquote, bulletList, orderedList, rule, panel); text-holding
blocks hold inline nodes (text, hardBreak, mention, emoji, inlineCard); a text node has a
non-empty `text` and known marks; a link mark has an `href`. Anything else is refused, as the
site refuses it with a 400.
"""

from __future__ import annotations

from typing import Any

_BLOCKS = {
    "paragraph": "inline",
    "heading": "inline",
    "codeBlock": "text",
    "blockquote": "block",
    "bulletList": "items",
    "orderedList": "items",
    "rule": "none",
    "panel": "block",
}
_INLINE = frozenset({"text", "hardBreak", "mention", "emoji", "inlineCard"})
_MARKS = frozenset({"strong", "em", "code", "strike", "underline", "link", "subsup", "textColor"})


def adf_problem(document: Any) -> str:
    """What makes `document` not a valid ADF document, or '' when it is one."""
    if not isinstance(document, dict) or document.get("type") != "doc":
        return "the value is not an ADF document (type doc)"
    if document.get("version") != 1:
        return "doc.version must be 1"
    content = document.get("content")
    if not isinstance(content, list):
        return "doc.content must be a list"
    return next((p for p in (_block(node, f"content[{i}]") for i, node in enumerate(content)) if p), "")


def text_to_adf(text: str) -> dict[str, Any]:
    """A plain string shown through API v3 (a v2 write read back in v3)."""
    paragraphs = [p for p in text.split("\n\n") if p]
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": p}]} for p in paragraphs],
    }


def adf_to_text(document: Any) -> str:
    """The text of an ADF document (or a string as it is), blocks separated by blank lines."""
    if not isinstance(document, dict):
        return "" if document is None else str(document)
    return "\n\n".join(_text(block) for block in document.get("content") or [])


def _text(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") == "hardBreak":
        return "\n"
    return "".join(_text(child) for child in node.get("content") or [])


def _block(node: Any, where: str) -> str:
    if not isinstance(node, dict):
        return f"{where} is not a node"
    kind = _BLOCKS.get(str(node.get("type")))
    if kind is None:
        return f"{where}: {node.get('type')!r} is not a block node"
    content = node.get("content", [])
    if not isinstance(content, list):
        return f"{where}.content must be a list"
    if node.get("type") == "heading" and (node.get("attrs") or {}).get("level") not in range(1, 7):
        return f"{where}: a heading needs attrs.level 1-6"
    if kind == "none" and content:
        return f"{where}: {node['type']} has no content"
    for i, child in enumerate(content):
        at = f"{where}.content[{i}]"
        if kind == "inline":
            problem = _inline(child, at)
        elif kind == "text":
            problem = _inline(child, at) or (
                ""
                if child.get("type") == "text" and not child.get("marks")
                else f"{at}: codeBlock holds unmarked text only"
            )
        elif kind == "items":
            items = child.get("content") if isinstance(child, dict) and child.get("type") == "listItem" else None
            problem = (
                f"{at} must be a listItem"
                if not isinstance(items, list)
                else next((p for p in (_block(b, f"{at}.content[{j}]") for j, b in enumerate(items)) if p), "")
            )
        else:
            problem = _block(child, at)
        if problem:
            return problem
    return ""


def _inline(node: Any, where: str) -> str:
    if not isinstance(node, dict) or node.get("type") not in _INLINE:
        return f"{where} is not an inline node"
    if node["type"] != "text":
        return ""
    text = node.get("text")
    if not isinstance(text, str) or not text:
        return f"{where}: a text node needs non-empty text"
    for mark in node.get("marks") or []:
        if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
            return f"{where}: unknown mark {mark!r}"
        if mark["type"] == "link" and not (mark.get("attrs") or {}).get("href"):
            return f"{where}: a link mark needs attrs.href"
    return ""
