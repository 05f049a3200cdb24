"""This replica's liveness: its row in the store, the heartbeat, and the takeover of dead ones.

Every `reconciler run` registers under its delivery engine's lease owner and heartbeats every
HEARTBEAT_SECONDS. Each beat also takes over the work of replicas silent for DEAD_AFTER_SECONDS
(their leases are cleared, every delivery gets a `takeover` attempt row, their row goes), once
this replica has itself beaten without a break for that long, and notes whether this replica
leads, for the status page.

The lease of what this replica holds is trusted for a little less than DEAD_AFTER_SECONDS after
the start of the last beat that found its row: past that, the survivors may have taken it over,
so the lanes give units back rather than send them, and the intake hands nothing new to this
engine. A beat that finds the row gone (the replica was paused, or cut off from the database,
and declared dead) gives back everything the lanes hold and registers again; outcomes written
meanwhile only apply where the lease is still this replica's (the store's fence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler import __version__
from reconciler.store import AsyncStore, Outage, ReplicaInfo, Store, StoreUnavailable, Takeover

if TYPE_CHECKING:
    from reconciler.delivery.engine import DeliveryEngine

log = logging.getLogger("reconciler.replica")

HEARTBEAT_SECONDS = 1.0
# Silent this long, a replica is dead. Six missed beats: a live replica on a loaded 2-core
# machine (a slow disk, a full store pool, a garbage collection) is late by a second or two,
# not six; a killed one's work resumes within about DEAD_AFTER + HEARTBEAT + the claim poll.
DEAD_AFTER_SECONDS = 6.0
# This replica stops trusting its own leases this much before the others may declare it dead.
TRUST_MARGIN_SECONDS = 1.5


class Replica:
    """Registers this process, heartbeats until stopped, takes over dead replicas' work."""

    def __init__(
        self,
        store: AsyncStore | Store,
        engine: DeliveryEngine,
        *,
        role: str = "all",
        config_revision: Callable[[], str | None] = lambda: None,
        leading: Callable[[], bool] = lambda: False,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        dead_after: float = DEAD_AFTER_SECONDS,
    ) -> None:
        self.store = AsyncStore.of(store)
        self.engine = engine
        self.id = engine.owner
        self.role = role
        self.config_revision = config_revision
        self.leading = leading  # the controller election, as the reconcile loop last found it
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after = dead_after
        self._trusted_until = 0.0  # monotonic; nothing is trusted before the first registration
        # one process owns an SQLite store (an exclusive lock says so): nobody else can take
        # its work over, so its leases stay its own through a slow disk or a locked database
        self._sole_owner = self.store.dialect == "sqlite"
        self._registered = False
        self._beating_since: float | None = None  # monotonic start of the current run of good beats
        self._outage = Outage("replica heartbeat")
        engine.liveness = self

    def trusted(self) -> bool:
        """Whether the leases this replica holds are still its own for sure."""
        return self._sole_owner or time.monotonic() < self._trusted_until

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until `stop`; then the row goes (the engine gave its leases back before)."""
        try:
            while not stop.is_set():
                wait = self.heartbeat_seconds
                try:
                    await self.beat()
                except StoreUnavailable as exc:
                    self._beating_since = None
                    wait = min(self._outage.failed(exc), self.heartbeat_seconds * 2)
                except Exception:  # a bug here must not stop the heartbeat: the next beat tries again
                    log.exception("replica heartbeat failed", extra={"fields": {"replica": self.id}})
                else:
                    self._outage.recovered()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            await self._deregister()

    async def beat(self) -> None:
        """One heartbeat: register or refresh the row, then take over the dead."""
        started = time.monotonic()
        if not self._registered:
            await self._register()
        else:
            if not await self.store.heartbeat(self.id, self.config_revision(), self.leading()):
                self._declared_dead()
                await self._register()
        self._trusted_until = started + self.dead_after - TRUST_MARGIN_SECONDS
        if self._beating_since is None:
            self._beating_since = started
        # Only a replica that has itself beaten for a whole dead-after period judges the others:
        # after an outage of the database every row is stale, and the live replicas need that
        # long to beat again before any of them may be called dead.
        if started - self._beating_since >= self.dead_after:
            taken = await self.store.take_over_dead_replicas(self.dead_after)
            if taken:
                self._taken_over(taken)

    async def _register(self) -> None:
        info = ReplicaInfo(
            id=self.id,
            role=self.role,
            version=__version__,
            host=os.uname().nodename,
            pid=os.getpid(),
            config_revision=self.config_revision(),
        )
        await self.store.register_replica(info)
        self._registered = True
        if self.leading():  # the row says so from the start, for the status
            await self.store.heartbeat(self.id, self.config_revision(), True)
        log.info("replica registered", extra={"fields": {"replica": self.id, "role": self.role}})

    def _declared_dead(self) -> None:
        log.warning(
            "this replica was declared dead (its heartbeat was late): giving back what it holds and registering again",
            extra={"fields": {"replica": self.id, "deadAfterSeconds": self.dead_after}},
        )
        self._trusted_until = 0.0
        self.engine.fence()

    def _taken_over(self, taken: list[Takeover]) -> None:
        for takeover in taken:
            log.log(
                logging.WARNING if takeover.deliveries else logging.INFO,
                "took over the work of a dead replica",
                extra={
                    "fields": {
                        "replica": self.id,
                        "dead": takeover.replica_id,
                        "silentSeconds": round(takeover.silent_seconds, 1),
                        "deliveries": takeover.deliveries,
                    }
                },
            )
        if any(t.deliveries for t in taken):
            self.engine.wake()  # claim what was freed now, not at the next poll

    async def _deregister(self) -> None:
        if not self._registered:
            return
        try:
            await self.store.deregister_replica(self.id)
        except StoreUnavailable as exc:  # the row goes stale instead, and a survivor removes it
            log.warning("could not remove this replica's row", extra={"fields": {"reason": exc.reason}})
