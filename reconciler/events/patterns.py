"""Subscription patterns: `grade.published` (exact), `grade.*` (a family), `*` (everything)."""

from __future__ import annotations

import re

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)$")


def is_valid_pattern(pattern: str) -> bool:
    return bool(PATTERN.match(pattern))


def matches(pattern: str, event: str) -> bool:
    """Whether an event type matches a subscription pattern; `x.*` matches any depth below x."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event.startswith(pattern[:-1])
    return pattern == event
