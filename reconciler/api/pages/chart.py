"""The plot of an integration's page: sends per minute and their latency, drawn as SVG on the server.

No chart library and no script: the figures come from History.attempt_series and are drawn
here as two panels of one inline SVG. Colours are classes of the page's stylesheet, so the
plot follows the light or dark theme and the Content-Security-Policy needs no inline style.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

WIDTH, PANEL, GAP, LEFT, BOTTOM = 720, 120, 36, 48, 18


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least the value."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    while scale > value:
        scale /= 10
    for factor in (1, 2, 5, 10):
        if factor * scale >= value:
            return factor * scale
    return 10 * scale


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M")


def _at(at: float) -> str:
    """The minute as RFC 3339, for the page's script to show it in the viewer's zone."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tip(at: float, rest: str) -> str:
    """A hover text `HH:MM UTC: rest` that the page's script rewrites to the viewer's clock."""
    shown = escape(f"{_clock(at)} UTC{rest}")
    return f'<title class="clock" data-at="{_at(at)}" data-rest="{escape(rest)}">{shown}</title>'


def plot(series: list[dict[str, Any]], title: str) -> Markup:
    """Two panels over the same minutes: sends (delivered stacked on failed) and mean latency."""
    if not series:
        return Markup("")
    n = len(series)
    inner = WIDTH - LEFT - 8
    step = inner / n
    top_sends = _nice_max(max(b["delivered"] + b["failed"] for b in series))
    top_latency = _nice_max(max((b["latencyMs"] or 0.0) for b in series))
    height = 2 * PANEL + GAP + BOTTOM + 16
    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="plot-title" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="plot-title">{escape(title)}</title>',
    ]
    parts += _panel_frame(12, f"sends / min (max {top_sends:g})")
    for i, bucket in enumerate(series):
        x = LEFT + i * step
        total = bucket["delivered"] + bucket["failed"]
        if not total:
            continue
        failed_h = PANEL * bucket["failed"] / top_sends
        delivered_h = PANEL * bucket["delivered"] / top_sends
        y = 12 + PANEL
        parts.append("<g>" + _tip(bucket["at"], f": {bucket['delivered']} delivered, {bucket['failed']} not"))
        if failed_h:
            parts.append(_rect(x, y - failed_h, step, failed_h, "failed"))
        if delivered_h:
            parts.append(_rect(x, y - failed_h - delivered_h, step, delivered_h, "delivered"))
        parts.append("</g>")
    latency_top = 12 + PANEL + GAP
    parts += _panel_frame(latency_top, f"mean latency, ms (max {top_latency:g})")
    points = [
        (LEFT + (i + 0.5) * step, latency_top + PANEL - PANEL * b["latencyMs"] / top_latency, b)
        for i, b in enumerate(series)
        if b["latencyMs"] is not None
    ]
    if len(points) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        parts.append(f'<polyline class="latency" fill="none" points="{line}"/>')
    for x, y, bucket in points:  # a dot each: a lone minute with sends shows too
        tip = _tip(bucket["at"], f": mean {bucket['latencyMs']:g} ms, highest {bucket['latencyMaxMs']:g} ms")
        parts.append(f'<circle class="latency-point" cx="{x:.1f}" cy="{y:.1f}" r="2.5">{tip}</circle>')
    axis_y = latency_top + PANEL + 14
    for i in range(0, n, max(1, n // 6)):
        x = LEFT + i * step
        if x < WIDTH - 40:  # a label at the right edge would be cut off
            at = series[i]["at"]
            parts.append(f'<text class="axis clock" data-at="{_at(at)}" x="{x:.1f}" y="{axis_y}">{_clock(at)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _panel_frame(top: float, label: str) -> list[str]:
    return [
        f'<rect class="frame" x="{LEFT}" y="{top}" width="{WIDTH - LEFT - 8}" height="{PANEL}" fill="none"/>',
        f'<text class="axis" x="{LEFT}" y="{top - 3}">{escape(label)}</text>',
    ]


def _rect(x: float, y: float, w: float, h: float, kind: str) -> str:
    return f'<rect class="{kind}" x="{x:.1f}" y="{y:.1f}" width="{max(w - 0.5, 0.5):.1f}" height="{h:.1f}"/>'
