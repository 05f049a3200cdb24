"""The Degraded condition, from what delivery measured, never assumed.

An applied integration is Degraded when something stands between its events and their
target right now. What is looked at, in order of precedence (the condition's reason is the
first that holds, its message names every one):

- `CircuitOpen`: its endpoint's circuit breaker is open (five failures in a row);
- `Paused`: its endpoint asked for a pause with `Retry-After` that has not run out;
- `DeadLetters`: deliveries ran out of attempts in the window and are still dead (replayed, they
  no longer count);
- `DeliveriesFailing`: its latest send failed and most of its sends in the window did;
- `SyncFailing`: its latest scheduled sync fetch failed;
- `FileRefused`: its file no longer validates, so an older version is what runs.

The window is the last 15 minutes (`WINDOW_SECONDS`): recent enough that a fixed endpoint
turns healthy soon after, long enough to span a retry schedule's first steps. The monitor
keeps one immutable mapping of conditions and replaces it with one assignment after each
assessment, so every reader sees one whole assessment (the rule the reconciler's snapshot
follows); transition times move only when a condition's status flips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from reconciler.delivery.retry import EndpointState
from reconciler.reconcile.conditions import ConditionType, Reason, Status, condition, set_condition
from reconciler.store import AsyncStore, StoreUnavailable
from reconciler.store.history import iso
from reconciler.store.records import RecentOutcomes

if TYPE_CHECKING:
    from reconciler.delivery.engine import DeliveryEngine
    from reconciler.reconcile.loop import Reconciler
    from reconciler.registry import AppliedIntegration

log = logging.getLogger("reconciler.health")

WINDOW_SECONDS = 15 * 60.0
ASSESS_EVERY_SECONDS = 5.0  # how stale a Degraded condition read from the API can be
FAILED_SHARE = 0.5  # more than this share of the window's sends failed (with the latest one)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that degrades an integration: a Degraded reason and what it says."""

    reason: str
    message: str


def findings(
    integration: AppliedIntegration,
    conditions: list[dict[str, Any]],
    endpoint: EndpointState,
    recent: RecentOutcomes | None,
    now: float,
) -> list[Finding]:
    """Everything that degrades one applied integration now, most pressing first."""
    found: list[Finding] = []
    if endpoint.breaker_open_until is not None:
        found.append(
            Finding(
                Reason.CIRCUIT_OPEN,
                "the circuit breaker of its endpoint is open "
                f"(a trial request at {_clock(endpoint.breaker_open_until)})",
            )
        )
    if endpoint.paused_until is not None and endpoint.paused_until > now:
        found.append(
            Finding(
                Reason.PAUSED,
                f"its endpoint asked to wait (Retry-After) until {_clock(endpoint.paused_until)}",
            )
        )
    if recent is not None:
        dead = recent.dead_letters
        if dead:
            found.append(
                Finding(
                    Reason.DEAD_LETTERS,
                    f"{_count(dead, 'delivery', 'deliveries')} ran out of attempts in the last "
                    f"{WINDOW_SECONDS / 60:g} minutes; replay once fixed: reconciler replay {integration.id}",
                )
            )
        last = recent.last_send
        if last is not None and last.outcome != "delivered" and recent.failed_share > FAILED_SHARE:
            tried = sum(recent.sends.values())
            found.append(
                Finding(
                    Reason.DELIVERIES_FAILING,
                    f"{recent.failed_share:.0%} of {_count(tried, 'send', 'sends')} failed in the last "
                    f"{WINDOW_SECONDS / 60:g} minutes; the latest: {_attempt_text(last.status_code, last.error)}",
                )
            )
        sync = recent.last_sync
        if sync is not None and sync.outcome != "delivered":
            found.append(
                Finding(
                    Reason.SYNC_FAILING,
                    f"the latest sync fetch failed: {_attempt_text(sync.status_code, sync.error)}",
                )
            )
    synced = condition(conditions, ConditionType.SYNCED) or {}
    if synced.get("status") == Status.FALSE and synced.get("reason") == Reason.VALIDATION_FAILED:
        found.append(Finding(Reason.FILE_REFUSED, f"an older version runs: {synced.get('message')}"))
    return found


def degraded_condition(previous: list[dict[str, Any]], found: list[Finding], generation: int) -> list[dict[str, Any]]:
    """The Degraded condition (in a one-item list, as set_condition keeps conditions) for these findings."""
    if found:
        message = "; ".join(f.message for f in found)
        return set_condition(previous, ConditionType.DEGRADED, Status.TRUE, found[0].reason, message, generation)
    return set_condition(
        previous, ConditionType.DEGRADED, Status.FALSE, Reason.HEALTHY, "no delivery trouble", generation
    )


class HealthMonitor:
    """Assesses every applied integration every few seconds; `condition(id)` is the latest
    Degraded condition."""

    def __init__(self, reconciler: Reconciler, engine: DeliveryEngine | None, store: AsyncStore) -> None:
        self.reconciler = reconciler
        self.engine = engine
        self.store = store
        self._conditions: Mapping[str, dict[str, Any]] = MappingProxyType({})
        self._lock = asyncio.Lock()

    def condition(self, integration_id: str) -> dict[str, Any] | None:
        return self._conditions.get(integration_id)

    async def assess(self) -> None:
        """Measure and publish; one assessment at a time (the API may ask while the loop runs one)."""
        async with self._lock:
            now = time.time()
            recent = await self.store.call(self.store.sync.recent_outcomes, now - WINDOW_SECONDS)
            snapshot = self.reconciler.snapshot
            updated: dict[str, dict[str, Any]] = {}
            for integration_id, integration in snapshot.applied.items():
                record = snapshot.registry.get(integration_id)
                if record is None:
                    continue
                previous = self._conditions.get(integration_id)
                found = findings(
                    integration, record.conditions, self._endpoint(integration), recent.get(integration_id), now
                )
                conditions = degraded_condition([previous] if previous else [], found, integration.generation)
                updated[integration_id] = conditions[0]
                self._log_transition(integration_id, previous, conditions[0])
            self._conditions = MappingProxyType(updated)

    async def run(self, stop: asyncio.Event, every: float = ASSESS_EVERY_SECONDS) -> None:
        """The role: assess now and every `every` seconds until `stop`; a store outage skips a round."""
        while not stop.is_set():
            try:
                await self.assess()
            except StoreUnavailable as exc:
                log.warning("health not assessed: the store is unavailable", extra={"fields": {"error": str(exc)}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def _endpoint(self, integration: AppliedIntegration) -> EndpointState:
        if self.engine is None:
            return EndpointState(None, None)
        return self.engine.endpoint_state(integration)

    @staticmethod
    def _log_transition(integration_id: str, previous: dict[str, Any] | None, current: dict[str, Any]) -> None:
        was_degraded = previous is not None and previous.get("status") == Status.TRUE
        if (current["status"] == Status.TRUE) == was_degraded:
            return
        fields = {"integration": integration_id, "reason": current["reason"], "detail": current["message"]}
        if current["status"] == Status.TRUE:
            log.warning("integration degraded", extra={"fields": fields})
        else:
            log.info("integration healthy again", extra={"fields": fields})


def _clock(at: float) -> str:
    """An instant as RFC 3339 UTC, as every time in the API is written."""
    return iso(at) or ""


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _attempt_text(status_code: int | None, error: str | None) -> str:
    if status_code is not None and error and not error.startswith(f"HTTP {status_code}"):
        return f"HTTP {status_code}: {error}"
    if status_code is not None:
        return f"HTTP {status_code}"
    return error or "no answer"
