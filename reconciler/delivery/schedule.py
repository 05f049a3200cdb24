"""Work done for an integration every `syncFrequency` seconds: syncs and watched sources.

Runs are aligned to multiples of the frequency (like batch flushes), happen on the leader only
(with PostgreSQL replicas, one of them does them), and at most one per integration is in
flight. A subclass says which integrations it serves and what one run does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.reconcile.loop import Reconciler
    from reconciler.registry import AppliedIntegration

TICK_SECONDS = 0.5
LEADER_CHECK_SECONDS = 10.0


class Schedule:
    """Runs a job per integration every `syncFrequency` seconds, aligned to multiples of it, one
    run at a time, on the store's leader only; the integrations come from the snapshot."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}

    def serves(self, integration: AppliedIntegration) -> bool:
        """Whether this schedule has work for the integration (besides a frequency)."""
        raise NotImplementedError

    def job(self, integration: AppliedIntegration) -> Coroutine[Any, Any, Any]:
        """One run for the integration."""
        raise NotImplementedError

    async def closed(self) -> None:
        """Called once the schedule has stopped and its runs have ended."""

    async def run(self, stop: asyncio.Event) -> None:
        leader_checked, leader = 0.0, False
        try:
            while not stop.is_set():
                if time.monotonic() - leader_checked > LEADER_CHECK_SECONDS:
                    leader = await self.reconciler.store.is_leader()
                    leader_checked = time.monotonic()
                if leader:
                    self.tick(time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            await self.closed()

    def tick(self, now: float) -> None:
        for integration in self.reconciler.snapshot.applied.values():
            every = integration.spec.syncFrequency
            if every <= 0 or not integration.delivering or not self.serves(integration):
                self._due.pop(integration.id, None)
                continue
            due = self._due.setdefault(integration.id, math.ceil(now / every) * every)
            running = self._running.get(integration.id)
            if now >= due and (running is None or running.done()):
                self._due[integration.id] = math.floor(now / every) * every + every
                self._running[integration.id] = asyncio.create_task(self.job(integration))
