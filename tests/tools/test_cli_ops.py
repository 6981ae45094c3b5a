"""`bridge schema` (the committed mappings/schema.json) and `bridge replay`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import redis.asyncio as aioredis
import yaml

from tests.amp import alert, group
from tests.conftest import Snow
from tests.running import ROOT, cli, write_mapping


async def test_committed_schema_is_current_and_validates_the_example() -> None:
    """mappings/schema.json equals `bridge schema`; the example mapping passes it and a typo does not."""
    generated = (await cli("schema")).stdout
    assert generated == (ROOT / "mappings" / "schema.json").read_bytes(), "run: bridge schema -o mappings/schema.json"
    schema = orjson.loads(generated)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((ROOT / "bridge" / "samples" / "example.yaml").read_text())
    assert list(validator.iter_errors(example)) == []

    typo: dict[str, Any] = orjson.loads(orjson.dumps(example))
    typo["routes"][0]["lifecycle"]["resolve_afer"] = "5m"
    assert any("resolve_afer" in e.message for e in validator.iter_errors(typo))
    bad_duration = orjson.loads(orjson.dumps(example))
    bad_duration["routes"][0]["lifecycle"]["resolve_after"] = "five minutes"
    assert list(validator.iter_errors(bad_duration))
    from_file = orjson.loads(orjson.dumps(example))
    desk = from_file["desks"]["servicenow"]
    desk["password_file"] = desk.pop("password")
    assert list(validator.iter_errors(from_file)) == []


async def test_replay_reports_tickets_calls_and_noise_without_touching_real_state(
    snow: Snow, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A recorded problem replays to one ticket opened and resolved on the stream's clock, in a private Redis."""
    mapping_file = write_mapping(tmp_path / "mapping.yaml", snow, resolve_after="5m")
    start = 1_715_677_965_000
    lines = [{"source": "alertmanager", "at": start + i * 60_000, "body": group(alert())} for i in range(8)]
    lines.append({"source": "alertmanager", "at": start + 8 * 60_000, "body": group(alert(), alert(device="/x"))})
    lines.append(
        {"at": start + 9 * 60_000, "body": group(alert("resolved"), alert("resolved", device="/x"))}  # default source
    )
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))

    out = await cli("--log-level", "warning", "replay", str(stream), "--config", str(mapping_file), "--settle", "10m")
    report = orjson.loads(out.stdout)
    assert (report["webhooks"], report["alerts"]) == (10, 12)
    assert report["tickets_opened"] == 1
    assert report["desk_calls"]["open"] == 1 and report["desk_calls"]["resolve"] == 1
    assert report["noise_reduction"] == round(1 - 1 / 12, 4)
    assert [i["state"] for i in report["incidents"]] == ["resolved"]
    resolve = next(c for c in report["calls"] if c["action"] == "resolve")
    assert resolve["at"] == start + 9 * 60_000 + 5 * 60_000, "the hold-down did not run on the stream's clock"

    assert await redis.dbsize() == 0
    assert snow.store.requests == []

    short = await cli("--log-level", "warning", "replay", str(stream), "--config", str(mapping_file))
    assert orjson.loads(short.stdout)["incidents"][0]["state"] == "resolving", "without --settle the hold-down runs on"
