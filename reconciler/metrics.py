"""Prometheus metrics, read from the daemon's own counters when scraped.

The hot paths keep plain integers (an attempt outcome, a latency bucket); the collector turns
them into metric families at scrape time. Nothing is registered globally, so several daemons
(or tests) in one process each expose their own numbers.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from reconciler.store import Attempt

# seconds; a loopback sink answers in about a millisecond, a slow partner in seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running, found = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            found.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return found


class DeliveryStats:
    """Attempts by integration and outcome, and request latency by integration."""

    def __init__(self) -> None:
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, _Histogram] = {}

    def total(self, outcome: str) -> int:
        """Attempts with this outcome, over every integration."""
        return sum(count for (_, seen), count in self.attempts.items() if seen == outcome)

    def observe(self, attempt: Attempt) -> None:
        self.attempts[(attempt.integration_id, attempt.outcome)] += 1
        # every sink's tries: an HTTP request, a database write, a file write. A try refused
        # before it reached the sink (a template that does not render) measured no time: 0.
        if attempt.latency_ms is not None and attempt.latency_ms > 0:
            histogram = self.latency.get(attempt.integration_id)
            if histogram is None:
                histogram = self.latency[attempt.integration_id] = _Histogram()
            histogram.observe(attempt.latency_ms / 1000)


@dataclass
class Sources:
    """Where the collector reads from; each is optional (a CLI-only process has none)."""

    passes: Callable[[], tuple[int, int]] | None = None  # (passes run, passes that failed)
    # what the last pass found in the files: (files refused, integrations refused, waiting for secrets)
    last_pass: Callable[[], tuple[int, int, int]] | None = None
    integrations: Callable[[], Counter[str]] | None = None  # by status word
    intake: Callable[[], tuple[int, int]] | None = None  # (events accepted, deliveries queued)
    delivery: DeliveryStats | None = None
    queue: Callable[[], dict[str, Any]] | None = None  # the store's queue_stats(), read per scrape
    # whether this process reports the database-wide gauges (the queue): only the leader does,
    # so that a sum over replicas counts the queue once
    leader: Callable[[], bool] | None = None
    replica: tuple[str, str, str] | None = None  # (id, role, version) of this process


class _Collector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self.sources
        if s.passes is not None:
            passes, errors = s.passes()
            yield _counter("reconciler_reconcile_passes", "Reconcile passes run, failed ones included.", passes)
            yield _counter(
                "reconciler_reconcile_errors",
                "Reconcile passes that failed (raised, or found no config directory); "
                "a refused file or a missing secret is not a failure.",
                errors,
            )
        if s.last_pass is not None:
            files, refused, waiting = s.last_pass()
            yield _gauge(
                "reconciler_files_refused", "Files the last reconcile pass refused (they do not validate).", files
            )
            yield _gauge(
                "reconciler_integrations_refused",
                "Integrations whose declared version the last pass refused (it does not validate).",
                refused,
            )
            yield _gauge(
                "reconciler_integrations_waiting_for_secrets",
                "Integrations whose declared version waits for secrets that do not resolve.",
                waiting,
            )
        if s.integrations is not None:
            family = GaugeMetricFamily("reconciler_integrations", "Integrations by status.", labels=["status"])
            for status, count in sorted(s.integrations().items()):
                family.add_metric([status], count)
            yield family
        if s.intake is not None:
            accepted, queued = s.intake()
            yield _counter("reconciler_events_accepted", "Events stored and acknowledged.", accepted)
            yield _counter("reconciler_deliveries_queued", "Deliveries created by accepted events.", queued)
        if s.delivery is not None:
            attempts = CounterMetricFamily(
                "reconciler_delivery_attempts", "Delivery attempts by outcome.", labels=["integration", "outcome"]
            )
            for (integration, outcome), count in sorted(s.delivery.attempts.items()):
                attempts.add_metric([integration, outcome], count)
            yield attempts
            latency = HistogramMetricFamily(
                "reconciler_delivery_latency_seconds",
                "Time one try at the sink took: an HTTP request to its response, a database or file write.",
                labels=["integration"],
            )
            for integration, histogram in sorted(s.delivery.latency.items()):
                latency.add_metric([integration], histogram.cumulative(), histogram.total)
            yield latency
        leader = s.leader() if s.leader is not None else True
        if s.replica is not None:
            info = GaugeMetricFamily(
                "reconciler_replica_info",
                "This replica: its id (host:pid:suffix), role and version; always 1.",
                labels=["replica", "role", "version"],
            )
            info.add_metric(list(s.replica), 1)
            yield info
            yield _gauge(
                "reconciler_leader",
                "1 on the replica that leads (runs scheduled syncs and retention, reports the queue), else 0.",
                1 if leader else 0,
            )
        if s.queue is not None and leader:
            queue = s.queue()
            yield _gauge("reconciler_queue_depth", "Deliveries waiting (pending or failed).", queue["depth"])
            yield _gauge(
                "reconciler_queue_oldest_seconds", "Age of the oldest waiting delivery.", queue["oldestPendingSeconds"]
            )
            yield _gauge("reconciler_dead_letters", "Deliveries out of attempts.", queue["dead"])


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def render(sources: Sources) -> bytes:
    """The Prometheus text exposition of everything the sources hold now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(sources))
    return generate_latest(registry)
