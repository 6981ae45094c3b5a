"""`bridge init`, the packaged example as the default mapping, and the options every command takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml

from bridge.cli import build_parser
from bridge.tools.starter import SCHEMA_HINT, example_mapping
from tests.running import ROOT

EXAMPLE = ROOT / "bridge" / "samples" / "example.yaml"


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`bridge ARGS` run from `cwd`, without the environment variables that would choose for it."""
    env = {k: v for k, v in os.environ.items() if k not in ("BRIDGE_REDIS_URL", "BRIDGE_DATA_DIR")}
    command = [sys.executable, "-m", "bridge.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_the_default_mapping_is_the_one_packaged_example() -> None:
    """The default mapping is bridge/samples/example.yaml, and mappings/ holds no second copy of it."""
    assert example_mapping() == EXAMPLE
    assert not (ROOT / "mappings" / "example.yaml").exists()
    shipped = [p for folder in ("mappings", "deploy", "docs", "bench") for p in (ROOT / folder).glob("**/*.y*ml")]
    assert [p for p in shipped if p.read_bytes() == EXAMPLE.read_bytes()] == []


def test_check_config_without_a_file_checks_the_packaged_example(tmp_path: Path) -> None:
    """`bridge check-config` with no file, from a directory with no mapping, checks the packaged example."""
    done = bridge("check-config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 12 source(s), 1 desk(s), 4 route(s)")
    assert str(EXAMPLE) in done.stdout and "packaged example" in done.stdout


@pytest.mark.parametrize("args", [["serve", "--config", "nope.yaml"], ["check-config", "nope.yaml"]])
def test_a_missing_mapping_says_what_to_do(tmp_path: Path, args: list[str]) -> None:
    """A mapping file that is not there is a config error naming it and telling to give its path or run init."""
    done = bridge(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("config error: nope.yaml: no such file"), done.stderr
    assert "`bridge init`" in done.stderr and str(tmp_path) in done.stderr
    assert ("--config PATH" if args[0] == "serve" else "bridge check-config PATH") in done.stderr


def test_init_writes_a_starter_that_passes_check_config_and_its_schema(tmp_path: Path) -> None:
    """`bridge init` writes mapping.yaml (the example, schema hint first) and schema.json; both check out."""
    done = bridge("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bridge check-config mapping.yaml" in done.stdout and "bridge serve --config mapping.yaml" in done.stdout
    text = (tmp_path / "mapping.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./schema.json"
    assert text == SCHEMA_HINT + EXAMPLE.read_text()
    assert (tmp_path / "schema.json").read_text() == bridge("schema", cwd=tmp_path).stdout

    checked = bridge("check-config", "mapping.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: 12 source(s), 1 desk(s), 4 route(s) in mapping.yaml")
    validator = jsonschema.Draft202012Validator(orjson.loads((tmp_path / "schema.json").read_bytes()))
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


def test_init_into_a_directory_it_creates(tmp_path: Path) -> None:
    """`bridge init DIR` writes into DIR, creating it."""
    done = bridge("init", "ops/bridge", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "ops" / "bridge").iterdir()) == ["mapping.yaml", "schema.json"]


@pytest.mark.parametrize("existing", ["mapping.yaml", "schema.json"])
def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path, existing: str) -> None:
    """With either file there, `bridge init` writes nothing and says --force; with --force it overwrites both."""
    (tmp_path / existing).write_text("# mine\n")
    done = bridge("init", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"error: {existing} already exist: nothing written (--force overwrites)\n"
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "# mine\n"

    forced = bridge("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "mapping.yaml").read_text() == SCHEMA_HINT + EXAMPLE.read_text()
    assert (tmp_path / "schema.json").read_text().startswith("{")


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "--data-dir", "d", "incidents", "list"],
        ["incidents", "list", "--log-level", "debug", "--data-dir", "d"],
        ["--log-level", "info", "incidents", "--data-dir", "d", "--log-level", "debug"],
        ["--data-dir", "d", "--log-level", "debug", "serve", "--port", "0"],
        ["serve", "--data-dir", "d", "--log-level", "debug"],
        ["--data-dir", "d", "replay", "x.jsonl", "--log-level", "debug"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    """--log-level and --data-dir are taken before or after the command; given twice, the later one wins."""
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.data_dir) == ("debug", "d")


def test_global_options_before_the_command_survive_it() -> None:
    """A command given no global options keeps those given before it (its parser has no defaults to undo them)."""
    args = build_parser().parse_args(["--data-dir", "d", "--log-level", "error", "dlq"])
    assert (args.log_level, args.data_dir) == ("error", "d")
    defaults = build_parser().parse_args(["dlq"])
    assert defaults.data_dir is None
