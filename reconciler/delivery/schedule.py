"""Work done for an integration every `syncFrequency` seconds: syncs and watched sources.

Runs are aligned to multiples of the frequency (like batch flushes), happen on the leader only
(with PostgreSQL replicas, one of them does them), and at most one per integration is in
flight. A subclass says which integrations it serves and what one run does.

A store that cannot be reached does not stop a schedule: the replica does not lead meanwhile (it
cannot hold the election's lock), and takes its runs up again when it leads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from reconciler.store import Outage, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.reconcile.loop import Reconciler
    from reconciler.registry import AppliedIntegration

log = logging.getLogger("reconciler.schedule")

TICK_SECONDS = 0.5


class Schedule:
    """Runs a job per integration every `syncFrequency` seconds, aligned to multiples of it, one
    run at a time, on the store's leader only; the integrations come from the snapshot."""

    role = "schedule"  # the daemon's name for the role, in log lines

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._outage = Outage(self.role)

    def serves(self, integration: AppliedIntegration) -> bool:
        """Whether this schedule has work for the integration (besides a frequency)."""
        raise NotImplementedError

    def job(self, integration: AppliedIntegration) -> Coroutine[Any, Any, Any]:
        """One run for the integration."""
        raise NotImplementedError

    async def closed(self) -> None:
        """Called once the schedule has stopped and its runs have ended."""

    async def run(self, stop: asyncio.Event) -> None:
        next_check, leader = 0.0, False
        try:
            while not stop.is_set():
                if time.monotonic() >= next_check:
                    leader, wait = await self._check_leader()
                    next_check = time.monotonic() + wait
                if leader:
                    self.tick(time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            await self.closed()

    async def _check_leader(self) -> tuple[bool, float]:
        """Whether this process leads, as the reconcile loop's election last found (it asks the
        store every few seconds, and not at all while the store cannot be reached): syncs and
        reconcile passes run on the same one replica, never a second one in a flap."""
        return self.reconciler.leading, TICK_SECONDS

    async def _run_job(self, integration: AppliedIntegration) -> None:
        """One run, whatever becomes of it: a run that fails is logged, and the next comes on time."""
        try:
            await self.job(integration)
        except StoreUnavailable as exc:
            log.warning(
                f"{self.role} run skipped: the store is unavailable; the next run tries again",
                extra={"fields": {"role": self.role, "integration": integration.id, "reason": exc.reason}},
            )
        except Exception:
            fields = {"role": self.role, "integration": integration.id}
            log.exception(f"{self.role} run failed", extra={"fields": fields})

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
                self._running[integration.id] = asyncio.create_task(self._run_job(integration))
