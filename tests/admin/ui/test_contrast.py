"""The style sheet's colours: every rule that sets a text colour sets its background too, and each such
pair has a contrast ratio of at least 4.5:1 (WCAG 2.1 AA for normal text, its relative-luminance formula).
The browser test checks the same on the rendered pages, element by element."""

from __future__ import annotations

import re

from bridge.admin.ui import static_dir

RULE = re.compile(r"([^{}]+)\{([^}]*)\}")
DECL = re.compile(r"(?:^|;)\s*(color|background-color)\s*:\s*([^;]+)")


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def pairs() -> list[tuple[str, str, str]]:
    css = re.sub(r"/\*.*?\*/", "", (static_dir() / "ui.css").read_text(), flags=re.S)
    found = []
    for selector, body in RULE.findall(css):
        decls = dict(DECL.findall(body))
        if "color" in decls:
            found.append((selector.strip(), decls["color"].strip(), decls.get("background-color", "").strip()))
    return found


def test_the_formula_is_wcags() -> None:
    """Black on white is 21:1, a colour on itself 1:1, and #767676 on white the known AA edge, 4.54:1."""
    assert round(contrast("#000000", "#ffffff"), 2) == 21.0
    assert contrast("#1f2937", "#1f2937") == 1.0
    assert round(contrast("#767676", "#fff"), 2) == 4.54


def test_every_text_colour_has_its_background_and_enough_contrast() -> None:
    """Each rule with `color` names its `background-color`; opaque pairs reach 4.5:1, and a transparent
    background (links) is checked against the page's."""
    found = pairs()
    assert len(found) >= 20
    page = next(bg for sel, _, bg in found if sel == "body")
    low = []
    for selector, fg, bg in found:
        assert bg, f"{selector} sets color without background-color"
        ratio = contrast(fg, page if bg == "transparent" else bg)
        if ratio < 4.5:
            low.append((selector, fg, bg, round(ratio, 2)))
    assert not low, low
