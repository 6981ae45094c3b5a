"""Issue links in the simulated Jira: `POST /rest/api/{2,3}/issueLink` and an issue's `fields.issuelinks`.

Follows Atlassian's "Create issue link" (operation `linkIssues`, https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-links/;
the operation and its schemas are in tests/fixtures/specs/jira/issue-link.v3.json): a body with `type`
(by `name` or `id`), `inwardIssue` and `outwardIssue` (by `key` or `id`) and an optional `comment`,
added to the from (outward) issue; 201 with no body; 404 when either issue or the link type is not
found; a link that duplicates one is answered as created (and not made twice). An issue shows its links
in `fields.issuelinks`, each naming the other issue as `inwardIssue` or `outwardIssue` with its key,
summary, status and issue type, and the link type's `inward` and `outward` wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.simulators.jira_store import JiraError, JiraStore, comment_problem

# The link types of a new Jira Cloud site, and Jira Service Management's own.
LINK_TYPES: tuple[dict[str, str], ...] = (
    {"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
    {"id": "10001", "name": "Cloners", "inward": "is cloned by", "outward": "clones"},
    {"id": "10002", "name": "Duplicate", "inward": "is duplicated by", "outward": "duplicates"},
    {"id": "10003", "name": "Relates", "inward": "relates to", "outward": "relates to"},
    {"id": "10004", "name": "Causes", "inward": "is caused by", "outward": "causes"},
    {"id": "10005", "name": "Problem/Incident", "inward": "is caused by", "outward": "causes"},
)


def link_type(ref: Any) -> dict[str, str]:
    ref = ref if isinstance(ref, Mapping) else {}
    for kind in LINK_TYPES:
        if ref.get("id") == kind["id"] or ref.get("name") == kind["name"]:
            return kind
    name = ref.get("name") or ref.get("id")
    raise JiraError(404, f"No issue link type with name '{name}' found.")


def link(store: JiraStore, body: Mapping[str, Any], version: int) -> None:
    """Link two issues (and comment on the outward one), or 404."""
    kind = link_type(body.get("type"))
    issues = []
    for side in ("inwardIssue", "outwardIssue"):
        ref = body.get(side)
        if not isinstance(ref, Mapping) or not (ref.get("key") or ref.get("id")):
            raise JiraError(400, errors={side: f"{side} is required"})
        issues.append(store.get(str(ref.get("key") or ref.get("id"))))
    inward, outward = issues
    comment = body.get("comment")
    if isinstance(comment, Mapping):
        problem = comment_problem(comment.get("body"), version)
        if problem:
            raise JiraError(400, errors={"comment": problem})
    if not any(n["type"] == kind["id"] and n["inward"] is inward and n["outward"] is outward for n in outward.links):
        store.link_ids += 1
        made = {"id": str(store.link_ids), "type": kind["id"], "inward": inward, "outward": outward}
        outward.links.append(made)
        if inward is not outward:
            inward.links.append(made)
    if isinstance(comment, Mapping):
        store.comment(outward, comment.get("body"))
