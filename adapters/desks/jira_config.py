"""The keys of a Jira desk (`kind: jira`) in the mappings: their defaults and the checks made when loading.

`JiraSettings` holds them; `JiraConfig` (adapters.desks.jira), the model the entry point registers,
adds `build`. The split keeps the settings free of the desk, which imports them.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.desks.jira_fields import RICH_TEXT
from adapters.desks.transport import DeskAddress, Seconds, https_url
from bridge.core.templates import compile_template


class JiraSettings(DeskAddress):
    """One Jira site (Cloud or Data Center), optionally with a JSM service desk: its keys; `build` is JiraConfig's."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jira"]
    url: str  # https://your-domain.atlassian.net or https://jira.example.com
    api_type: Literal["auto", "cloud", "datacenter"] = "auto"
    api_version: Literal[2, 3] | None = None  # default: 3 on Cloud, 2 on Data Center (its only one)
    email: str | None = None  # Cloud: Basic email:api_token
    api_token: SecretStr | None = None
    token: SecretStr | None = None  # Data Center: personal access token, sent as Bearer
    project: str  # project key, e.g. OPS
    issue_type: str = "Incident"
    correlation: Literal["label", "property"] = "label"
    label_prefix: str = ""  # the correlation label is label_prefix + correlation id
    property_key: str = "alert-bridge"
    resolve_transition: str = "Resolve Issue"
    reopen_transition: str = "Reopen Issue"
    resolution: str = "Done"
    closed_statuses: list[str] = ["Closed", "Canceled", "Cancelled", "Won't Do"]
    rich_text_fields: list[str] = list(RICH_TEXT)
    # Fields whose rendered text is JSON (option fields: `{"value": "Sev 1"}`); every other one is text.
    json_fields: list[str] = []
    service_desk: str | None = None  # JSM service desk id: notes become internal JSM comments
    request_type: str | None = None  # JSM request type id for every open (a route may set requestTypeId)
    request_labels: list[str] = []  # JSM request types whose form shows Labels: label set in the request
    timeout: Seconds = 10.0
    # How long after a create Jira's search may still not show the issue (Cloud search is eventually
    # consistent): an open whose answer was lost is made again only once search, asked `timeout` +
    # `search_lag` after that open was sent, still does not find it (docs/desks.md, "Lost opens").
    search_lag: float = Field(15.0, ge=0)  # 0: search shows a create at once (a Data Center site may)
    ca_file: str | None = None  # custom CA bundle; TLS verification is never disabled
    # The loop back: resolutions and statuses that mean "cancelled" rather than resolved, and a JQL
    # clause narrowing the poll (AND-ed to `project = <project>`), e.g. `labels = alertmanager`.
    cancelled: list[str] = ["Won't Do", "Won't Fix", "Declined", "Duplicate", "Canceled", "Cancelled", "Rejected"]
    sync_jql: str = ""
    # Change-aware tickets (route `change:`): the JQL of the approved changes on a CI, a template with `ci`
    # (the CI's name, already a quoted JQL string), e.g. `project = CHG AND status = "Implementing" AND
    # "Affected CI" ~ {{ ci }}`; empty: no change is ever found. A change found covers now when its
    # `change_start_field` and `change_end_field` (JSM: "Change start date", "Change completion date",
    # customfield ids per site) hold now; without them, the JQL alone decides.
    change_jql: str = ""
    change_start_field: str = ""
    change_end_field: str = ""
    # Links from the incident (the outward, "from" issue, which gets the note) to the change and the
    # problem; JSM sites also have "Problem/Incident" and "Causes".
    change_link_type: str = "Relates"
    problem_issue_type: str = "Problem"  # problem records: issues of this type in `project`
    problem_link_type: str = "Relates"

    @field_validator("change_jql")
    @classmethod
    def _template(cls, value: str) -> str:
        compile_template(value)
        return value

    @field_validator("url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        return https_url(value, "https://your-domain.atlassian.net")

    @field_validator("label_prefix")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError("Jira labels cannot contain spaces")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        basic = self.email is not None or self.api_token is not None
        if basic == (self.token is not None):
            raise ValueError("give either email and api_token (Basic) or token (Bearer PAT)")
        if basic and (self.email is None or self.api_token is None):
            raise ValueError("Basic auth needs both email and api_token")
        if self.api_type == "datacenter" and self.api_version == 3:
            raise ValueError("Jira Data Center has no REST API v3: use api_version 2")
        if self.request_type is not None and self.service_desk is None:
            raise ValueError("request_type needs service_desk")
        return self
