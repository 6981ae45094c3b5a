"""Alertmanager webhook payloads for tests, built from the recorded fixture."""

from __future__ import annotations

import copy
from typing import Any

from adapters.sources.alertmanager import fingerprint
from tests.conftest import fixture_json

GO_ZERO = "0001-01-01T00:00:00Z"


def group(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A version-4 message around `alerts`, with the recorded envelope."""
    message = copy.deepcopy(fixture_json("alertmanager_firing.json"))
    message["alerts"] = list(alerts)
    message["status"] = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return message


def alert(
    status: str = "firing",
    *,
    alertname: str = "NodeFilesystemAlmostOutOfSpace",
    instance: str = "db-prod-01.example.com:9100",
    device: str = "/dev/sdb1",
    severity: str = "critical",
    starts: str = "2024-05-14T09:12:45.123Z",
    ends: str | None = None,
    **labels: str,
) -> dict[str, Any]:
    all_labels = {
        "alertname": alertname,
        "instance": instance,
        "device": device,
        "severity": severity,
        **labels,
    }
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{alertname} on {device}"},
        "startsAt": starts,
        "endsAt": ends or (GO_ZERO if status == "firing" else "2024-05-14T10:02:45.123Z"),
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint(all_labels),
    }
