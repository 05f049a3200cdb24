"""Outbound pacing per integration (`config.rateLimit`): requests per second and in flight.

Requests are spaced evenly (1/perSecond apart) rather than sent in bursts, so no window of
one second ever holds more than the partner allows. Nothing is dropped: work waits its turn.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Spaces turns at least `1 / per_second` apart (rateLimit.perSecond, batchDelay); no limit: no wait."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait_turn(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = time.monotonic()
            self._next = now + self.interval
