"""The noise chart as data for inline SVG: per route, one bar per figure, scaled to the largest value.
Drawn by the server (templates/noise.html), so the page needs no script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (figure, legend, CSS class): the classes' colours are in static/ui.css
SERIES = (
    ("alerts", "alerts in", "s-alerts"),
    ("incidents", "incidents", "s-incidents"),
    ("tickets", "tickets opened", "s-tickets"),
    ("desk_calls", "desk calls", "s-desk"),
)
LABEL_W, BAR_H, GAP, PLOT_W, VALUE_W = 180, 14, 10, 460, 70


def bars(rows: Sequence[dict[str, Any]], window: str) -> dict[str, Any]:
    """Geometry of a grouped horizontal bar chart of `rows` (each `{"name", window: {figure: n}}`)."""
    top = max((row[window][f] for row in rows for f, _, _ in SERIES), default=0) or 1
    groups, y = [], 0
    for row in rows:
        items = []
        for i, (figure, legend, css) in enumerate(SERIES):
            value = int(row[window][figure])
            items.append({
                "y": y + i * BAR_H, "w": max(1, round(PLOT_W * value / top)) if value else 0, "value": value,
                "legend": legend, "css": css,
            })  # fmt: skip
        groups.append({"name": row["name"], "y": y, "items": items})
        y += len(SERIES) * BAR_H + GAP
    return {
        "groups": groups, "height": max(y, BAR_H), "width": LABEL_W + PLOT_W + VALUE_W, "label_w": LABEL_W,
        "bar_h": BAR_H, "series": SERIES, "top": top,
    }  # fmt: skip
