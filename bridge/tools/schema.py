"""The JSON Schema of the mapping format, generated from the pydantic models (`bridge schema`).

Committed as mappings/schema.json, and written beside the starter mapping by `bridge init`, so that
editors complete and check the YAML: with the redhat.vscode-yaml extension (or any
yaml-language-server client) put `# yaml-language-server: $schema=./schema.json` on a mapping's
first line. The schema describes what an ops team writes, which is a little more than what the
models hold after loading: durations as text (`5m`), and `<secret>_file:` in place of a secret. A
test keeps the committed file current.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from bridge.core.config import SECRET_KEYS, MappingConfig, parse_duration

SCHEMA_ID = "https://github.com/alert-ticket-bridge/alert-ticket-bridge/mappings/schema.json"
DURATION = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d)?)+$|^\$\{", "examples": ["30s", "5m", "1h30m"]},
    ],
    "description": "seconds, or a duration such as 250ms, 30s, 5m, 1h30m, 1d",
}


class _MappingSchema(GenerateJsonSchema):
    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        if schema["function"].get("function") is parse_duration:
            return dict(DURATION)
        return super().function_before_schema(schema)


def mapping_schema() -> dict[str, Any]:
    schema = MappingConfig.model_json_schema(by_alias=True, mode="validation", schema_generator=_MappingSchema)
    _secret_files(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "alert-ticket-bridge mapping",
        "description": "sources, desks and routes; see README.md (Mappings). `${VAR}` and `${VAR:-default}` "
        "are replaced from the environment before validation.",
        **schema,
    }


def schema_text() -> str:
    """The schema as `bridge schema` prints it and mappings/schema.json holds it."""
    return orjson.dumps(mapping_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def _secret_files(node: Any) -> None:
    """Let every secret key be given as `<key>_file: PATH` instead, as the loader allows."""
    if isinstance(node, list):
        for item in node:
            _secret_files(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        secrets = [key for key in properties if key in SECRET_KEYS]
        for key in secrets:
            properties[f"{key}_file"] = {"type": "string", "description": f"a file holding {key}"}
        required = node.get("required", [])
        either = [key for key in secrets if key in required]
        if either:
            node["required"] = [key for key in required if key not in either]
            node.setdefault("allOf", []).extend(
                {"anyOf": [{"required": [key]}, {"required": [f"{key}_file"]}]} for key in either
            )
    for value in node.values():
        _secret_files(value)
