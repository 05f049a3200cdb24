"""How events reach a partner, whatever the integration's type: which events (`webhooks`
entries), how many per request and how fast (`batchSize`, `batchDelay`, `rateLimit`), and
the per-integration `retry` override.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from reconciler.events.filters import FilterBudgetError, FilterError, compile_filter
from reconciler.events.patterns import PATTERN
from reconciler.manifests.fields import FieldProblem
from reconciler.manifests.models.common import Duration, Strict, Template, bounded_duration

MAX_RETRY_INTERVAL_SECONDS = 7 * 86400.0
MAX_BATCH_DELAY_MS = 3_600_000

BatchSize = Annotated[int, Field(ge=1, le=10_000, description="events per request")]
BatchDelay = Annotated[int, Field(ge=0, le=MAX_BATCH_DELAY_MS, description="milliseconds between batch requests")]


class RateLimit(Strict):
    """Outbound pacing per integration, to stay under a partner's limits."""

    perSecond: float | None = Field(None, gt=0, le=10_000)
    concurrency: int | None = Field(None, ge=1, le=1000)


RetryInterval = Annotated[
    Duration,
    AfterValidator(lambda v: bounded_duration(v, "retry interval", 0, MAX_RETRY_INTERVAL_SECONDS)),
]


class Retry(Strict):
    """Per-integration retry override; the last interval repeats up to maxAttempts."""

    maxAttempts: int | None = Field(None, ge=1, le=100)
    schedule: list[RetryInterval] | None = Field(None, min_length=1, max_length=100)


class Subscription(Strict):
    """Events this integration receives: patterns, an optional CEL filter and template."""

    events: list[Annotated[str, Field(pattern=PATTERN.pattern)]] = Field(min_length=1)
    filter: str | None = Field(None, min_length=1, description="CEL expression over id, event, timestamp, data")
    template: Template | None = None

    @field_validator("filter")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_filter(value)
            except FilterBudgetError as exc:
                raise FieldProblem(
                    f"the filter is over its cost budget: {exc}",
                    'test membership with `in` ("x" in data.tags) rather than an inner exists(),'
                    " or join separate comprehensions with && and ||; see docs/file-format.md",
                ) from None
            except FilterError as exc:
                raise FieldProblem(
                    f"the filter does not compile: {exc}",
                    'CEL looks like: data.priority == "high" && event != "user.login"',
                ) from None
        return value
