"""The OpenAPI 3.1 document of the admin API (/api/v1), built from pydantic models at import.

Request bodies are the models here that `bridge.admin.api` validates with; answers are described by the models
below, which follow what `bridge.admin.incidents`, `bridge.engine.silences` and `bridge.delivery.dlq`
return. The tests check the document against the running app (tests/admin/test_api.py, with
schemathesis).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import models_json_schema

from bridge.core.models import MAX_TIME_MS

INCIDENT_STATES = ("pending", "open", "resolving", "resolved")
SILENCE_STATES = ("pending", "active", "expired")
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
U64 = 2**64


def is_stream_id(text: str) -> bool:
    """A Redis stream id `<ms>-<seq>`, both parts unsigned 64-bit (Redis refuses larger ones)."""
    return bool(STREAM_ID.fullmatch(text)) and all(int(part) < U64 for part in text.split("-"))


REF = "#/components/schemas/{model}"


# --- request bodies (their JSON Schema is in the OpenAPI document) ---------------------------------


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=4000, description="why; written as a work note before the resolve")
    by: str = Field("", max_length=200, description="who resolved it (audit trail and work note)")


# Documents the shape (`name op value`); the matcher parser itself decides, naming what is wrong.
MatcherText = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": r"^\s*\{?\s*[A-Za-z_][A-Za-z0-9_.]*\s*(=~|!~|!=|=)"})
]


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[MatcherText] = Field(min_length=1, description='Alertmanager matchers, e.g. team="db"')
    starts_at: int | None = Field(None, ge=0, le=MAX_TIME_MS, description="ms since the epoch; default now")
    ends_at: int | None = Field(None, ge=0, le=MAX_TIME_MS, description="ms since the epoch; or give duration")
    duration: str | None = Field(None, description="e.g. 2h, 30m; used when ends_at is not given")
    comment: str = Field("", max_length=4000)
    created_by: str = Field("", max_length=200)


# --- answers ---------------------------------------------------------------------------------------


class Error(BaseModel):
    error: str = Field(description="a stable code: unauthorized, not_found, bad_payload, ...")
    detail: str = Field(description="what is wrong and what to do, for a human")


class Ticket(BaseModel):
    id: str
    display: str
    url: str


class Incident(BaseModel):
    id: str = Field(description="<route id>:<key hash>:<epoch>, the correlation id in the desk")
    route: str
    state: str = Field(description="pending, open, resolving or resolved")
    firing: int
    opened_at: int = Field(description="ms since the epoch")
    resolved_at: int = Field(description="ms since the epoch; 0 while not resolved")
    reopened: int
    resolved_by: str = Field(description="who resolved it by hand, if anyone")
    ticket: Ticket | None


class IncidentDetail(Incident):
    members: dict[str, dict[str, Any]] = Field(description="alert identity -> occurrence, status, ...")
    outbox: list[dict[str, Any]] = Field(description="desk actions not yet delivered, oldest first")
    audit: list[dict[str, Any]] = Field(
        description="what happened, newest first: the first alert, opens, reopens, resolves and every desk action "
        "with its outcome (capped at 200 of them), and the latest 200 other decisions (notes, pending, ...)"
    )
    repeats: dict[str, int] = Field(description="alerts that changed nothing (why -> how many): counted, not listed")
    changes_dropped: int = Field(description="older decisions no longer listed, to make room for newer ones")
    desk_events: list[dict[str, Any]] = Field(
        description="changes people made at the desk (the loop back), newest first: when (the desk's time), "
        "kind, author, the ticket, and what the bridge did (MUTED, REOPEN, OPEN, RESOLVED, CANCELLED, ...)"
    )
    upstream: list[dict[str, Any]] = Field(
        description="actions on the monitoring tools not yet made (acknowledge, extend, release, comment), oldest first"
    )
    muted: bool = Field(description="resolved at the desk while alerts fire: notes only until every member clears")


class Resolution(BaseModel):
    incident: str
    outcome: str = Field(description="RESOLVE: queued for the desk")
    outbox: int = Field(description="desk actions now queued for this incident")


class SilenceView(BaseModel):
    id: str
    matchers: list[str]
    starts_at: int
    ends_at: int
    comment: str
    created_by: str
    status: str = Field(description="pending, active or expired")


class Expired(BaseModel):
    id: str
    expired: bool


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="stream id")
    kind: str = Field(description="bad_alert, bad_entry, unrouted, decision_failed, desk_rejected, ...")


class Retry(BaseModel):
    id: str
    outcome: str


class Dropped(BaseModel):
    id: str
    dropped: bool


def _ok(model: str, status: str = "200", description: str = "OK", many: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": REF.format(model=model)}
    if many:
        schema = {"type": "array", "items": schema}
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _errors(*codes: str) -> dict[str, Any]:
    text = {
        "400": "bad request: the detail names the field",
        "401": "missing or wrong bearer token",
        "403": "admin API disabled (no BRIDGE_ADMIN_TOKEN)",
        "404": "not found",
        "409": "conflict: the detail says why",
        "503": "Redis unreachable: retry later",
    }
    body = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    return {c: {"description": text[c], "content": body} for c in ("401", "403", "503", *codes)}


def _id(description: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


LIMIT = _query("limit", "at most this many (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000})
LETTER_ID = {**_id("dead-letter id"), "schema": {"type": "string", "pattern": r"^\d{1,20}-\d{1,20}$"}}


def _body(model: str, required: bool = True) -> dict[str, Any]:
    schema = {"$ref": REF.format(model=model)}
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _paths() -> dict[str, Any]:
    return {
        "/incidents": {"get": {
            "operationId": "listIncidents", "summary": "Incidents, most recently changed first",
            "tags": ["incidents"],
            "parameters": [
                _query("state", "only in this state", {"type": "string", "enum": list(INCIDENT_STATES)}),
                _query("route", "only of this route", {"type": "string"}), LIMIT,
            ],
            "responses": {**_ok("Incident", many=True), **_errors("400")},
        }},
        "/incidents/{id}": {"get": {
            "operationId": "showIncident", "summary": "One incident with members, outbox and audit trail",
            "tags": ["incidents"], "parameters": [_id("incident id, or its base <route>:<key hash>")],
            "responses": {**_ok("IncidentDetail"), **_errors("404")},
        }},
        "/incidents/{id}/resolve": {"post": {
            "operationId": "resolveIncident",
            "summary": "Resolve by hand: a work note, then the desk resolve, through delivery",
            "tags": ["incidents"], "parameters": [_id("incident id, or its base (the current epoch)")],
            "requestBody": _body("ResolveRequest", required=False),
            "responses": {**_ok("Resolution", "202", "queued"), **_errors("400", "404", "409")},
        }},
        "/silences": {
            "get": {
                "operationId": "listSilences", "summary": "Silences and maintenance windows",
                "tags": ["silences"],
                "parameters": [_query("status", "only with this status",
                                      {"type": "string", "enum": list(SILENCE_STATES)})],
                "responses": {**_ok("SilenceView", many=True), **_errors("400")},
            },
            "post": {
                "operationId": "createSilence", "summary": "Silence alerts matching all the matchers",
                "tags": ["silences"], "requestBody": _body("SilenceRequest"),
                "responses": {**_ok("SilenceView", "201", "created"), **_errors("400")},
            },
        },
        "/silences/{id}": {
            "get": {
                "operationId": "showSilence", "summary": "One silence", "tags": ["silences"],
                "parameters": [_id("silence id")],
                "responses": {**_ok("SilenceView"), **_errors("404")},
            },
            "delete": {
                "operationId": "expireSilence", "summary": "Expire a silence now (it is kept, expired)",
                "tags": ["silences"], "parameters": [_id("silence id")],
                "responses": {**_ok("Expired"), **_errors("404")},
            },
        },
        "/dlq": {"get": {
            "operationId": "listDeadLetters", "summary": "Dead letters, oldest first", "tags": ["dlq"],
            "parameters": [
                _query("kind", "only of this kind", {"type": "string"}),
                _query("after", "page: only letters after this id",
                       {"type": "string", "pattern": r"^\d{1,20}-\d{1,20}$"}),
                LIMIT,
            ],
            "responses": {**_ok("DeadLetter", many=True), **_errors("400")},
        }},
        "/dlq/{id}": {
            "get": {
                "operationId": "showDeadLetter", "summary": "One dead letter", "tags": ["dlq"],
                "parameters": [LETTER_ID], "responses": {**_ok("DeadLetter"), **_errors("404")},
            },
            "delete": {
                "operationId": "dropDeadLetter", "summary": "Drop a dead letter for good", "tags": ["dlq"],
                "parameters": [LETTER_ID], "responses": {**_ok("Dropped"), **_errors("404")},
            },
        },
        "/dlq/{id}/retry": {"post": {
            "operationId": "retryDeadLetter",
            "summary": "Put a rejected desk call back at the head of its incident's outbox",
            "tags": ["dlq"], "parameters": [LETTER_ID],
            "responses": {**_ok("Retry", "202", "queued"), **_errors("404", "409")},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document (no auth)", "tags": ["meta"],
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}},
        }},
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        Error, Incident, IncidentDetail, Resolution, SilenceView, Expired, DeadLetter, Retry, Dropped,
        ResolveRequest, SilenceRequest,
    ]  # fmt: skip
    _, schemas = models_json_schema(
        [(m, "validation" if m in (ResolveRequest, SilenceRequest) else "serialization") for m in models],
        ref_template=REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "alert-ticket-bridge admin API",
            "version": "1",
            "description": "Incidents, silences and dead letters of the bridge. Send "
            "`Authorization: Bearer <BRIDGE_ADMIN_TOKEN>`; without that variable the API is off (403).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas["$defs"],
        },
    }
