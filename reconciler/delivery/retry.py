"""When to try again: the retry schedule with jitter, and what holds an endpoint (its
circuit breaker and Retry-After pause, shared by replicas: `breakers.py`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from reconciler.manifests.durations import parse_duration

# In the spirit of Standard Webhooks: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_SCHEDULE_SECONDS: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER_FRACTION = 0.2  # +-20%: retries of many deliveries do not arrive in lockstep


@dataclass(frozen=True)
class RetryPolicy:
    """`schedule[n]` is the wait before attempt n+1; beyond its end the last interval repeats."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE_SECONDS
    max_attempts: int = len(DEFAULT_SCHEDULE_SECONDS)

    @classmethod
    def from_spec(cls, schedule: list[str] | None, max_attempts: int | None) -> RetryPolicy:
        seconds = tuple(parse_duration(s) for s in schedule) if schedule else DEFAULT_SCHEDULE_SECONDS
        return cls(seconds, max_attempts or len(seconds))

    def delay_after(self, attempts: int, jitter: bool = True) -> float:
        """Seconds to wait after `attempts` failed attempts (1 after the first failure)."""
        base = self.schedule[min(attempts, len(self.schedule) - 1)]
        if jitter and base > 0:
            base *= 1 + random.uniform(-JITTER_FRACTION, JITTER_FRACTION)
        return base

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What holds an integration's endpoint at one instant, as the health monitor sees it."""

    breaker_open_until: float | None  # set while its circuit breaker is open
    paused_until: float | None  # set while a Retry-After pause holds
