"""Sinks: where deliveries go.

The HTTP sink (`api`, `webhook`) sends a body the engine renders from the subscription's
template. Record sinks (`database`, `file`) take the event envelopes themselves and shape them
by their own config (a column mapping, a file format). Every sink answers with a SinkResult,
so retries, the circuit breaker and the attempt log treat them all alike.

This module holds what they share: SinkResult, the Sink and RecordSink protocols, the record
sinks by integration type, and config_of, which gives a sink its integration's config as the
sink's own model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from reconciler.manifests.models import DatabaseConfig, FileConfig, HttpConfig
from reconciler.registry import AppliedIntegration
from reconciler.store.records import storable

ConfigT = TypeVar("ConfigT", HttpConfig, DatabaseConfig, FileConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkResult:
    """What one try at a sink came to: the attempt log, retries and the circuit breaker read it.

    Built by keyword only. Every result is fit for the store as built: the excerpt and the error
    are kept as attempt text, and PostgreSQL text cannot hold NUL (a partner's response can), so
    NUL becomes U+FFFD here, whoever builds the result."""

    ok: bool
    status: int | None
    latency_ms: float
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from a 429/503 Retry-After
    endpoint_failure: bool = True  # counts toward the endpoint's circuit breaker

    def __post_init__(self) -> None:
        # frozen: the cleaned text replaces the given one before anyone can read it
        object.__setattr__(self, "excerpt", storable(self.excerpt))
        object.__setattr__(self, "error", storable(self.error))

    @property
    def gone(self) -> bool:
        return self.status == 410

    @classmethod
    def success(cls, excerpt: str, started: float) -> SinkResult:
        """A write or check that worked, timed from `started` (a perf_counter reading)."""
        return cls(ok=True, status=None, latency_ms=(time.perf_counter() - started) * 1000, excerpt=excerpt)

    @classmethod
    def failure(cls, error: str, started: float, *, endpoint_failure: bool = True) -> SinkResult:
        """A try that failed before any status came back, timed from `started`."""
        return cls(
            ok=False,
            status=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
            endpoint_failure=endpoint_failure,
        )


class Sink(Protocol):
    """What every sink has: connections, pools or threads of its own, released at shutdown.

    The HTTP sink adds `send(integration, body, message_id)`; record sinks are RecordSinks."""

    async def close(self) -> None:
        """Release what the sink holds; it is not used again."""
        ...


class RecordSink(Sink, Protocol):
    """A sink that writes event envelopes (one, or a batch) somewhere other than an HTTP endpoint."""

    async def write(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], message_id: str
    ) -> SinkResult:
        """Write the envelopes as one unit: all of them, or none (a retry writes them again)."""
        ...

    async def check(self, integration: AppliedIntegration) -> SinkResult:
        """The test endpoint's check: reach the target and inspect it, without writing."""
        ...


def record_sinks(store_url: str | None = None) -> dict[str, RecordSink]:
    """The record sinks by integration type; none may write into the store at `store_url`."""
    from reconciler.sinks.database import DatabaseSink
    from reconciler.sinks.files import FileSink

    sinks: dict[str, RecordSink] = {"database": DatabaseSink(store_url=store_url), "file": FileSink()}
    return sinks


def config_of(integration: AppliedIntegration, kind: type[ConfigT]) -> ConfigT:
    """The integration's config as `kind`, the model of the sink's own type.

    The engine hands a sink only integrations of its types; any other is a bug, raised as one."""
    config = integration.spec.config
    if not isinstance(config, kind):
        raise TypeError(f"integration {integration.id} has a {type(config).__name__}, not a {kind.__name__}")
    return config
