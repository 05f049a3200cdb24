"""When to try again: the retry schedule with jitter, and the circuit breaker (which also
holds the pause an endpoint asked for with Retry-After)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

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


TRIAL_WAIT_SECONDS = 2.0


@dataclass
class CircuitBreaker:
    """Per endpoint: after `threshold` consecutive failures, stop sending for a cool-down that
    doubles each time the endpoint fails again (up to `max_open`); one trial request closes it."""

    threshold: int = 5
    base_open: float = 5.0
    max_open: float = 600.0
    failures: int = 0
    open_until: float = 0.0
    opened: int = 0
    trial_in_flight: bool = field(default=False)

    def allows(self, now: float) -> bool:
        if self.failures < self.threshold:
            return True
        if now < self.open_until or self.trial_in_flight:
            return False
        self.trial_in_flight = True  # half-open: one request decides
        return True

    def retry_at(self, now: float) -> float:
        """When work it held back is worth claiming again: when it closes, or (while a trial
        request decides) shortly, rather than at once and over and over."""
        return max(self.open_until, now + TRIAL_WAIT_SECONDS if self.trial_in_flight else now)

    def success(self) -> None:
        self.failures = 0
        self.opened = 0
        self.trial_in_flight = False

    def failure(self, now: float) -> None:
        self.failures += 1
        trial = self.trial_in_flight
        self.trial_in_flight = False
        # the cool-down grows when the breaker opens or a trial fails, not with every failure
        # of requests that were already in flight
        if self.failures == self.threshold or (trial and self.failures > self.threshold):
            self.open_until = now + min(self.max_open, self.base_open * 2**self.opened)
            self.opened += 1

    def settle(self) -> None:
        """A result that says nothing about the endpoint (a 4xx, a template error) ends a trial."""
        self.trial_in_flight = False

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What holds an integration's endpoint at one instant, as the health monitor sees it."""

    breaker_open_until: float | None  # set while its circuit breaker is open
    paused_until: float | None  # set while a Retry-After pause holds
