"""Durations in the file format: strings with a unit (`500ms`, `10s`, `5m`, `2h`, `1d`).

Bare numbers are refused for durations (except `batchDelay`, milliseconds as in the
integration guide) because a bare `10` is ambiguous between seconds and milliseconds.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError with the accepted forms."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number with a unit, "
            "one of ms, s, m, h, d (for example 500ms, 10s, 5m)"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for messages and plans."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
