"""Retry-After, as a 429 or 503 answer gives it: delta-seconds or an HTTP date."""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

# A partner asking for a long pause holds its whole queue that long (every request to the
# endpoint waits): a mistaken or hostile "come back tomorrow" is capped at ten minutes, then
# the retry policy and the breaker decide. `reconciler run --max-retry-after` changes it.
MAX_RETRY_AFTER_SECONDS = 600.0
# RFC 9110 delta-seconds: ASCII digits only. str.isdigit() also says yes to "²" or "٣", which
# float() then refuses (or reads): such a header is treated as absent, like any other we cannot read.
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


def parse_retry_after(
    value: str | None, now: float | None = None, cap: float = MAX_RETRY_AFTER_SECONDS
) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), at most `cap`; None
    when the header is absent or cannot be read (the retry policy decides then)."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), cap)
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, moment - (now if now is not None else time.time())), cap)
