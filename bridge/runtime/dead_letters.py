"""Writing to the dead-letter stream, kept within its bounds: at most `dlq_max_len` letters, none older
than `dlq_max_age_ms` (Tuning, `BRIDGE_DLQ_MAX_LEN` and `BRIDGE_DLQ_MAX_AGE_MS`).

Each write queues its letters, then XTRIM MAXLEN ~ and XTRIM MINID ~ (whole stream nodes, so a trim
costs about what it removes and the stream may run ~100 letters over); the trims answer how many
letters they dropped, which `dropped` counts (`bridge_dead_letters_dropped_total{reason}`) and logs.
The upkeep trims by age too, so letters also go when nothing new is written (bridge.admin.upkeep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from bridge.core import keys
from bridge.core.tuning import Tuning
from bridge.runtime.metrics import Metrics

log = structlog.get_logger("bridge.runtime.dead_letters")
Fields = Mapping[str, Any]  # field -> str, bytes or number


def add(pipe: Any, tuning: Tuning, letters: Sequence[Fields], now_ms: int) -> int:
    """Queue the letters and the trims on `pipe`; how many commands were queued (0 with no letter).

    Their replies, in order: one id per letter, then the counts dropped by length and by age.
    """
    if not letters:
        return 0
    for letter in letters:
        pipe.xadd(keys.DLQ, letter)
    trim(pipe, tuning, now_ms)
    return len(letters) + 2


def trim(pipe: Any, tuning: Tuning, now_ms: int) -> None:
    """Queue the two trims: by length, then by age (replies: the counts each dropped)."""
    pipe.xtrim(keys.DLQ, maxlen=tuning.dlq_max_len, approximate=True)
    pipe.xtrim(keys.DLQ, minid=str(max(0, now_ms - tuning.dlq_max_age_ms)), approximate=True)


def dropped(metrics: Metrics, replies: Sequence[Any]) -> int:
    """Count and log what the trims dropped, from the replies of `add` (or of `trim`: the last two)."""
    if len(replies) < 2:
        return 0
    by_len, by_age = (int(r) if isinstance(r, int) else 0 for r in replies[-2:])
    if by_len:
        metrics.dead_letters_dropped.labels("length").inc(by_len)
    if by_age:
        metrics.dead_letters_dropped.labels("age").inc(by_age)
    if by_len or by_age:
        log.warning(
            "dead_letters_dropped", by_length=by_len, by_age=by_age,
            hint="the dead-letter stream is capped (BRIDGE_DLQ_MAX_LEN, BRIDGE_DLQ_MAX_AGE_MS); "
            "see `bridge dlq list` for what is kept",
        )  # fmt: skip
    return by_len + by_age
