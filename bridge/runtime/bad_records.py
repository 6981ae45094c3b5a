"""A record in Redis that cannot be read (a silence, an incident, an outbox entry, written by an older
version, by hand or by a bug) is skipped where it is met: reported in the log (`bad_record`, with its
kind, key and what is wrong) and counted (`bridge_bad_records_total{kind}`), and nothing else stops.

Each unreadable record is reported once per process and version of it (`seen`), so a bad silence
met by every engine batch is not a log line per batch.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from bridge.runtime.metrics import Metrics

log = structlog.get_logger("bridge.runtime.bad_records")
KINDS = ("silence", "incident", "outbox_entry")
HINTS = {
    "silence": "expire it (bridge silences expire ID, or DELETE /api/v1/silences/ID) to remove it",
    "incident": "resolve it by hand (bridge incidents resolve ID) or delete its keys",
    "outbox_entry": "it was moved to the dead letters (bridge dlq list --kind bad_record)",
}
_SEEN_MAX = 10_000


class Reporter:
    """Reports each bad record once (per kind, key and stored text) to the log and the counter."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._seen: set[tuple[str, str, Any]] = set()
        self._lock = threading.Lock()  # silences are read on a worker thread at times

    def __call__(self, kind: str, key: str, error: Any, raw: Any = None) -> None:
        with self._lock:
            mark = (kind, key, raw)
            if mark in self._seen:
                return
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen.add(mark)
        if self.metrics is not None:
            self.metrics.bad_records.labels(kind).inc()
        text = " ".join(str(error).split())[:300]
        log.warning("bad_record", kind=kind, key=key, error=text, hint=HINTS.get(kind, ""))
