"""Sinks: where deliveries go. HTTP (api, webhook) here; database and file sinks join later."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
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
