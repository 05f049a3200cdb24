"""Attempt rows from sink results: the one place a try becomes a log entry.

Deliveries, test sends and syncs all record what a sink answered the same way (status,
latency, the response excerpt, the error); `Attempt` itself makes the text storable.
"""

from __future__ import annotations

from reconciler.sinks import SinkResult
from reconciler.store import Attempt


def attempt_of(
    result: SinkResult,
    *,
    delivery_id: str,
    integration_id: str,
    at: float,
    trigger: str,
    number: int = 1,
    outcome: str | None = None,
    batch_id: str | None = None,
    excerpt_chars: int | None = None,
) -> Attempt:
    """The attempt row for one sink call; `outcome` defaults to delivered or failed by the result."""
    excerpt = result.excerpt
    if excerpt_chars is not None and excerpt:
        excerpt = excerpt[:excerpt_chars] or None
    return Attempt(
        delivery_id=delivery_id,
        integration_id=integration_id,
        at=at,
        attempt=number,
        trigger=trigger,
        outcome=outcome or ("delivered" if result.ok else "failed"),
        batch_id=batch_id,
        status_code=result.status,
        latency_ms=round(result.latency_ms, 2),
        response_excerpt=excerpt,
        error=result.error,
    )
