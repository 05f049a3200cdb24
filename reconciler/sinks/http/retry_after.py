"""Retry-After, as a 429 or 503 answer gives it: delta-seconds or an HTTP date."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 86400.0  # a partner asking for more than a day is capped at a day


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, moment - (now if now is not None else time.time())), MAX_RETRY_AFTER_SECONDS)
