"""Scheduled syncs: every `syncFrequency` seconds, an integration's `config.syncEndpoint` is
fetched with the integration's auth, and the result is emitted as `integration.synced`, an
event other integrations can subscribe to (the student information system's changes feeding
a reporting table, say).

Syncs are aligned to multiples of their frequency, like batch flushes, and at most one per
integration is in flight. Each fetch is logged as an attempt (`sync:<id>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from reconciler.events.envelope import EventRejected, new_id, now_timestamp
from reconciler.store import Attempt

if TYPE_CHECKING:
    from reconciler.events.intake import Intake
    from reconciler.reconcile.loop import AppliedIntegration, Reconciler
    from reconciler.sinks.http import HttpSink

log = logging.getLogger("reconciler.sync")

TICK_SECONDS = 0.5
LEADER_CHECK_SECONDS = 10.0
SYNC_BODY_BYTES = 256 * 1024  # the part of a sync result that goes into the event
EXCERPT_CHARS = 1024


class SyncScheduler:
    def __init__(self, reconciler: Reconciler, intake: Intake, http: HttpSink) -> None:
        self.reconciler = reconciler
        self.intake = intake
        self.http = http
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        leader_checked, leader = 0.0, False
        while not stop.is_set():
            if time.monotonic() - leader_checked > LEADER_CHECK_SECONDS:
                leader = await asyncio.to_thread(self.reconciler.store.is_leader)
                leader_checked = time.monotonic()
            if leader:  # with PostgreSQL replicas, one of them syncs
                self.tick(time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    def tick(self, now: float) -> None:
        for integration in list(self.reconciler.applied.values()):
            every = integration.spec.syncFrequency
            endpoint = getattr(integration.spec.config, "syncEndpoint", None)
            if every <= 0 or not endpoint or not integration.delivering:
                self._due.pop(integration.id, None)
                continue
            due = self._due.setdefault(integration.id, math.ceil(now / every) * every)
            running = self._running.get(integration.id)
            if now >= due and (running is None or running.done()):
                self._due[integration.id] = math.floor(now / every) * every + every
                self._running[integration.id] = asyncio.create_task(self.sync(integration))

    async def sync(self, integration: AppliedIntegration) -> None:
        """Fetch the sync endpoint once and emit what it answered."""
        endpoint = integration.spec.config.syncEndpoint  # type: ignore[union-attr]
        started = time.time()
        result = await self.http.send(
            integration, b"", new_id("sync"), method="GET", url=endpoint, read_limit=SYNC_BODY_BYTES
        )
        body: Any = result.excerpt
        with contextlib.suppress(TypeError, ValueError):
            body = json.loads(result.excerpt or "")
        attempt = Attempt(
            f"sync:{integration.id}",
            integration.id,
            started,
            1,
            "sync",
            "delivered" if result.ok else "failed",
            None,
            result.status,
            round(result.latency_ms, 2),
            (result.excerpt or "")[:EXCERPT_CHARS] or None,
            result.error,
        )
        await asyncio.to_thread(self.reconciler.store.log_attempts, [attempt])
        if not result.ok:
            log.warning("sync failed", extra={"fields": {"integration": integration.id, "error": result.error}})
            return
        data = {"integrationId": integration.id, "status": result.status, "body": body, "fetchedAt": now_timestamp()}
        try:
            await self.intake.emit("integration.synced", data, source=f"sync:{integration.id}")
        except EventRejected as exc:
            log.warning("sync result refused", extra={"fields": {"integration": integration.id, "error": str(exc)}})
