"""Prometheus metrics of one bridge process, in a registry of its own (so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from adapters.sources import Parsed


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts_received = Counter(
            "bridge_alerts_received",
            "Alerts accepted from sources, by source and status.",
            ["source", "status"],
            registry=self.registry,
        )
        self.alerts_rejected = Counter(
            "bridge_alerts_rejected",
            "Alerts of a sound payload that could not be read (kept as dead letters).",
            ["source"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "bridge_decisions",
            "Decisions of the engine, by kind.",
            ["route", "decision"],
            registry=self.registry,
        )
        self.desk_calls = Counter(
            "bridge_desk_calls",
            "Calls to service desks, by desk, action and outcome.",
            ["desk", "action", "outcome"],
            registry=self.registry,
        )
        self.desk_latency = Histogram(
            "bridge_desk_call_duration_seconds",
            "Latency of service-desk calls.",
            ["desk", "action"],
            registry=self.registry,
        )

    def received(self, source: str, parsed: Parsed) -> None:
        for alert in parsed.alerts:
            self.alerts_received.labels(source, alert.status.value).inc()
        if parsed.rejected:
            self.alerts_rejected.labels(source).inc(len(parsed.rejected))
