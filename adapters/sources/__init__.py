"""Source adapters: one pure parser per monitoring tool, registered here by kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from adapters.sources import (
    alertmanager,
    datadog,
    generic,
    grafana,
    nagios,
    signalfx,
    solarwinds,
    splunk,
    zabbix,
)
from adapters.sources.base import ParseContext, Parsed, Rejected, SourceAdapter
from bridge.errors import ConfigError

SOURCES: Mapping[str, SourceAdapter] = MappingProxyType(
    {
        "alertmanager": alertmanager.ADAPTER,
        "grafana": grafana.ADAPTER,
        "nagios": nagios.NAGIOS,
        "icinga2": nagios.ICINGA2,
        "splunk": splunk.ADAPTER,
        "signalfx": signalfx.ADAPTER,
        "solarwinds": solarwinds.ADAPTER,
        "zabbix": zabbix.ADAPTER,
        "datadog": datadog.ADAPTER,
        "generic": generic.ADAPTER,
    }
)

# Kinds whose `verify` reads options (signature header names, Grafana's replay window): the
# contract's verify gets no options, so these bind them once at start-up.
_BINDERS: Mapping[str, Callable[[Mapping[str, Any]], SourceAdapter]] = MappingProxyType(
    {
        "grafana": grafana.configured,
        "signalfx": signalfx.configured,
    }
)


def configured(kind: str, options: Mapping[str, Any]) -> SourceAdapter:
    """The adapter for `kind` with its options validated and, where verify needs them, bound to it.

    For start-up, once per configured source: `SOURCES[kind]` verifies with default options only.
    """
    adapter = SOURCES[kind]
    try:
        if adapter.options is not None:
            adapter.options.model_validate(dict(options))
        elif options:
            raise ConfigError(f"source kind {kind!r} takes no options")
        binder = _BINDERS.get(kind)
        return binder(options) if binder else adapter
    except ValidationError as exc:
        raise ConfigError(f"options for source kind {kind!r}: {exc}") from exc


__all__ = ["SOURCES", "ParseContext", "Parsed", "Rejected", "SourceAdapter", "configured"]
