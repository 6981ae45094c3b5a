"""Source adapters: one pure parser per monitoring tool, registered here by kind."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from adapters.sources import alertmanager
from adapters.sources.base import Parsed, ParseContext, Rejected, SourceAdapter

SOURCES: Mapping[str, SourceAdapter] = MappingProxyType(
    {
        "alertmanager": alertmanager.ADAPTER,
    }
)

__all__ = ["SOURCES", "ParseContext", "Parsed", "Rejected", "SourceAdapter"]
