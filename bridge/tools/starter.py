"""The example mapping that ships in the package, and `bridge init`, which writes a copy of it to edit.

bridge/samples/example.yaml is the one copy: the commands that take a mapping use it when given
none, and `bridge init` writes it out as mapping.yaml (with the editor hint for the JSON Schema on
its first line) and schema.json beside it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
from importlib import resources
from pathlib import Path

from bridge.core.errors import BridgeError
from bridge.tools.schema import schema_text

MAPPING_NAME = "mapping.yaml"
SCHEMA_NAME = "schema.json"
SCHEMA_HINT = f"# yaml-language-server: $schema=./{SCHEMA_NAME}\n"


@functools.cache
def example_mapping() -> Path:
    """The packaged example mapping as a file (a temporary copy, for the process's life, when the
    package is imported from an archive)."""
    resource = resources.files("bridge").joinpath("samples", "example.yaml")
    if isinstance(resource, Path):
        return resource
    extracted = contextlib.ExitStack()
    atexit.register(extracted.close)
    return extracted.enter_context(resources.as_file(resource))


def starter_text() -> str:
    """What `bridge init` writes as the mapping: the example, with the schema hint for editors first."""
    return SCHEMA_HINT + example_mapping().read_text()


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    """Write mapping.yaml and schema.json into `directory`; refuse, writing neither, if either exists
    (unless `force`). Returns the files written."""
    mapping, schema = directory / MAPPING_NAME, directory / SCHEMA_NAME
    existing = [str(path) for path in (mapping, schema) if path.exists()]
    if existing and not force:
        raise BridgeError(f"{' and '.join(existing)} already exist: nothing written (--force overwrites)")
    directory.mkdir(parents=True, exist_ok=True)
    mapping.write_text(starter_text())
    schema.write_text(schema_text())
    return [mapping, schema]
