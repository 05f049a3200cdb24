"""Sinks: where deliveries go.

The HTTP sink (`api`, `webhook`) sends a body the engine renders from the subscription's
template. Record sinks (`database`, `file`) take the event envelopes themselves and shape them
by their own config (a column mapping, a file format). Every sink answers with a SinkResult,
so retries, the circuit breaker and the attempt log treat them all alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SinkResult:
    ok: bool
    status: int | None
    latency_ms: float
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from a 429/503 Retry-After
    endpoint_failure: bool = True  # counts toward the endpoint's circuit breaker

    @property
    def gone(self) -> bool:
        return self.status == 410

    @classmethod
    def failure(cls, error: str, started: float, endpoint_failure: bool = True) -> SinkResult:
        return cls(False, None, (time.perf_counter() - started) * 1000, None, error, None, endpoint_failure)


class RecordSink(Protocol):
    """A sink that writes event envelopes (one, or a batch) somewhere other than an HTTP endpoint."""

    async def write(self, integration: Any, envelopes: list[dict[str, Any]], message_id: str) -> SinkResult:
        """Write the envelopes as one unit: all of them, or none (a retry writes them again)."""
        ...

    async def check(self, integration: Any) -> SinkResult:
        """The test endpoint's check: reach the target and inspect it, without writing."""
        ...

    async def close(self) -> None: ...


def record_sinks() -> dict[str, RecordSink]:
    """The record sinks by integration type."""
    from reconciler.sinks.database import DatabaseSink
    from reconciler.sinks.files import FileSink

    sinks: dict[str, RecordSink] = {"database": DatabaseSink(), "file": FileSink()}
    return sinks
