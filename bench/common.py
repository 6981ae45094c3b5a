"""What the benchmark sections share: the bench mapping, the wrk runner, percentiles, alert payloads."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
DESK_USER = DESK_PASSWORD = "bench"


def write_mapping(
    path: Path,
    *,
    desk_url: str,
    correlate: Sequence[str],
    resolve_after: str = "5m",
    reopen_within: str = "1h",
    flush_interval: str = "0s",
) -> Path:
    """A mapping like bridge/samples/example.yaml: one Alertmanager source with a token, one ServiceNow desk.

    The ticket's short_description is the alert's `bench_id` label, so the desk simulator's clock
    can be matched with the moment the bench's alert was accepted.
    """
    mapping = {
        "sources": {"alertmanager": {"kind": "alertmanager", "secret": TOKEN}},
        "desks": {
            "servicenow": {
                "kind": "servicenow",
                "url": desk_url,
                "user": DESK_USER,
                "password": DESK_PASSWORD,
                "timeout": 10.0,
            }
        },
        "routes": [
            {
                "name": "bench",
                "sources": ["alertmanager"],
                "desk": "servicenow",
                "correlate": {"by": list(correlate)},
                "lifecycle": {"resolve_after": resolve_after, "reopen_within": reopen_within},
                "ticket": {
                    "flush_interval": flush_interval,
                    "fields": {
                        "short_description": "{{ labels.bench_id | default(name) }}",
                        "description": "{{ summary }} on {{ resource }}",
                        "impact": "{{ {'critical': '1', 'major': '2'}.get(severity, '3') }}",
                        "urgency": "{{ {'critical': '1'}.get(severity, '2') }}",
                    },
                },
            }
        ],
    }
    path.write_text(json.dumps(mapping, indent=1))  # JSON is YAML
    return path


def trivial_desk(desk_url: str) -> dict[str, Any]:
    """The generic webhook desk against `bench/trivial.py`, which keeps nothing: every open, note and
    resolve is one POST answered at once."""
    action = {"path": "/webhook/desk", "body": {"id": "{{ correlation_id }}"}}
    return {
        "kind": "webhook", "url": desk_url, "timeout": 10.0,
        "open": {**action, "id": "to_string(accepted)"}, "note": action, "resolve": action, "reopen": action,
    }  # fmt: skip


def write_trivial_desk_mapping(path: Path, *, desk_url: str, correlate: Sequence[str]) -> Path:
    """One Alertmanager source, the generic webhook desk against a receiver that keeps nothing
    (`bench/trivial.py`): every open, note and resolve is one POST answered at once, and the desk does
    not slow down as tickets pile up (the ServiceNow simulator keeps every one)."""
    mapping = {
        "sources": {"alertmanager": {"kind": "alertmanager", "secret": TOKEN}},
        "desks": {"desk": trivial_desk(desk_url)},
        "routes": [
            {
                "name": "bench",
                "sources": ["alertmanager"],
                "desk": "desk",
                "correlate": {"by": list(correlate)},
                "lifecycle": {"resolve_after": "5m", "reopen_within": "1h"},
                "ticket": {"fields": {"summary": "{{ summary }}", "host": "{{ resource }}"}},
            }
        ],
    }  # fmt: skip
    path.write_text(json.dumps(mapping, indent=1))  # JSON is YAML
    return path


def repeat_alert(i: int, fmt: str = "webhook") -> dict[str, Any]:
    """Alert i of the fixed set bench/alerts.lua repeats (mode `repeat:<pool>`): the same labels,
    annotations, start and fingerprint as wrk sends it, so that sending it first makes it open."""
    labels = {"alertname": f"BenchAlert{i % 100}", "instance": f"host-rep-{i}", "job": "node",
              "severity": "critical", "run": "repeats"}  # fmt: skip
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": f"bench alert rep-{i}", "description": "synthetic load"},
        "startsAt": "2026-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    if fmt == "amapi":
        return alert
    return {"status": "firing", **alert, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{i:016x}"}


def am_alert(
    labels: dict[str, str], *, status: str = "firing", starts: str = "2026-01-01T00:00:00Z", ends: str = ""
) -> dict[str, Any]:
    """One alert of an Alertmanager webhook (version 4), with the fingerprint Alertmanager sends."""
    from adapters.sources.alertmanager import fingerprint

    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{labels.get('alertname')} on {labels.get('instance')}"},
        "startsAt": starts,
        "endsAt": ends or "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fingerprint(labels),
    }


def webhook_body(alerts: list[dict[str, Any]], status: str = "firing") -> bytes:
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "bridge",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }
    )


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write, timeouts and non-2xx answers
    p50_ms: float
    p99_ms: float

    def per_second(self, per_request: int = 1) -> float:
        return self.requests * per_request / self.seconds if self.seconds else 0.0


def wrk(
    url: str,
    *,
    fmt: str,
    per_request: int,
    connections: int,
    seconds: float,
    threads: int = 2,
    tag: str = "r",
    log: Path | None = None,
    mode: str = "unique",
) -> WrkResult:
    """Run wrk with bench/alerts.lua and read its `BENCH_JSON` line. `mode`: "unique" (every alert one
    no earlier request carried) or "repeat:<pool>" (the fixed set of `repeat_alert`, over and over)."""
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "10s", "-H", f"Authorization: Bearer {TOKEN}", "-s", str(HERE / "alerts.lua"),
        url, "--", fmt, str(per_request), tag, mode,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    if log is not None:
        with log.open("a") as sink:
            sink.write(" ".join(argv) + "\n" + done.stdout + done.stderr + "\n")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None
