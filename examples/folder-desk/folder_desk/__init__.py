"""A desk that files tickets as JSON documents in a folder: the example of an out-of-tree plugin.

It imports only the contract (`bridge.core.desk`, `bridge.core.errors`) and is registered by its
package's entry point `folder = "folder_desk:FolderConfig"` in the group `alert_ticket_bridge.desks`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict

from bridge.core.desk import TicketPhase, TicketRef, TicketState
from bridge.core.errors import DeskRejected


class FolderConfig(BaseModel):
    """The mapping's section for this desk kind."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder"]
    path: str  # the folder the tickets are written to; created if missing

    def build(self, name: str, session: aiohttp.ClientSession) -> FolderDesk:
        return FolderDesk(name, Path(self.path))


class FolderDesk:
    """One folder of tickets; a ticket's id is its number."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _file(self, ref: TicketRef) -> Path:
        return self.folder / f"{ref.id}.json"

    def _read(self, ref: TicketRef) -> dict[str, Any]:
        try:
            return dict(json.loads(self._file(ref).read_text()))
        except FileNotFoundError as exc:
            raise DeskRejected(f"{self.name}: no ticket {ref.id}", desk=self.name) from exc

    def _write(self, number: str, ticket: Mapping[str, Any]) -> None:
        temporary = self.folder / f".{number}.json.tmp"
        temporary.write_text(json.dumps(ticket, indent=2))
        os.replace(temporary, self.folder / f"{number}.json")  # readers never see half a ticket

    def _ref(self, number: str) -> TicketRef:
        return TicketRef(id=number, display=f"FOLDER-{number}", url=(self.folder / f"{number}.json").as_uri())

    async def find(self, correlation_id: str) -> TicketRef | None:
        numbers = sorted((int(p.stem) for p in self.folder.glob("[0-9]*.json")), reverse=True)
        for number in numbers:
            if json.loads((self.folder / f"{number}.json").read_text())["correlation_id"] == correlation_id:
                return self._ref(str(number))
        return None

    async def open(self, correlation_id: str, fields: Mapping[str, str]) -> TicketRef:
        number = str(1 + max((int(p.stem) for p in self.folder.glob("[0-9]*.json")), default=0))
        self._write(number, {"correlation_id": correlation_id, "fields": dict(fields), "state": "open", "notes": []})
        return self._ref(number)

    async def note(self, ref: TicketRef, text: str) -> None:
        ticket = self._read(ref)
        ticket["notes"].append(text)
        self._write(ref.id, ticket)

    async def update(self, ref: TicketRef, fields: Mapping[str, str]) -> None:
        ticket = self._read(ref)
        ticket["fields"].update(fields)
        self._write(ref.id, ticket)

    async def resolve(self, ref: TicketRef, note: str, fields: Mapping[str, str]) -> None:
        ticket = self._read(ref)
        ticket["fields"].update(fields)
        ticket["notes"].append(note)
        ticket["state"] = "resolved"
        self._write(ref.id, ticket)

    async def reopen(self, ref: TicketRef, note: str) -> None:
        ticket = self._read(ref)
        ticket["notes"].append(note)
        ticket["state"] = "open"
        self._write(ref.id, ticket)

    async def state(self, ref: TicketRef) -> TicketState:
        ticket = self._read(ref)
        return TicketState(phase=TicketPhase(ticket["state"]), raw_state=ticket["state"], fields=ticket["fields"])

    async def aclose(self) -> None:
        return None
