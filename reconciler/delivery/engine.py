"""The delivery engine: claims due deliveries from the outbox and drives them to the sinks.

A dispatcher claims due deliveries in batches (woken in-process by each intake commit, and
polling once a second for retries and other replicas) and hands them to one lane per
integration (`lane.py`), which applies the integration's pacing, batching, circuit breaker
and retry policy (worked out once per applied version: `profile.py`) and sends through the
sink of its type. Outcomes are written in groups (`outcomes.py`). Circuit breakers and
Retry-After pauses are shared with the other replicas through the store (`breakers.py`).

What runs is read from the reconciler's snapshot, taken once per round: the engine never
changes it. A 410 halts the integration here at once and asks the reconciler to suspend it.

While the store is unavailable, the dispatcher backs off (no claim storms, one log line), the
lanes finish what they hold, and the outcome writer keeps their outcomes until it can write them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

from reconciler.delivery.attempts import attempt_of
from reconciler.delivery.breakers import SharedEndpoints
from reconciler.delivery.lane import LANE_BUFFER, Lane
from reconciler.delivery.outcomes import OutcomeWriter
from reconciler.delivery.profile import DeliveryProfile, Profiles
from reconciler.delivery.retry import EndpointState
from reconciler.events.envelope import new_id, now_timestamp
from reconciler.metrics import DeliveryStats
from reconciler.registry import AppliedIntegration
from reconciler.sinks import RecordSink, SinkResult, record_sinks
from reconciler.sinks.http import HttpSink
from reconciler.store import AsyncStore, DueDelivery, Outage, Outcome, Store, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.delivery.replica import Replica
    from reconciler.reconcile.loop import Reconciler

log = logging.getLogger("reconciler.delivery")

CLAIM_LIMIT = 500  # deliveries per claim query
POLL_SECONDS = 1.0  # retries come due and other replicas enqueue without waking us
LEASE_MIN_SECONDS = 300.0
PRUNE_EVERY_SECONDS = 3600.0
RENEW_EVERY_SECONDS = 60.0  # leases of work still held are pushed back this often (a lease is 300 s or more)
HTTP_TYPES = ("api", "webhook")


class DeliveryEngine:
    """The delivery stage: the dispatcher, its lanes, the outcome writer and the sinks.

    `run(stop)` is the role's task; the intake hands freshly committed deliveries over with
    `lease`/`adopt`; `drain` lets a removed integration's requests finish; `test_send` is
    the API's test endpoint."""

    def __init__(
        self,
        store: AsyncStore | Store,
        reconciler: Reconciler,
        *,
        http: HttpSink | None = None,
        records: dict[str, RecordSink] | None = None,
        owner: str | None = None,
        retention_seconds: float | None = None,
    ) -> None:
        self.store = AsyncStore.of(store)
        self.reconciler = reconciler
        self.http = http or HttpSink()
        self.records = records if records is not None else record_sinks(store_url=self.store.sync.url)
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{new_id('w')[-8:]}"
        self.retention_seconds = retention_seconds
        self.stats = DeliveryStats()  # attempts and latency by integration, for /metrics
        self.profiles = Profiles()
        # outcomes apply only to deliveries whose lease is still this engine's (see Replica)
        self.outcomes = OutcomeWriter(self.store, owner=self.owner)
        self.liveness: Replica | None = None  # this replica's heartbeat, when several may share the store
        self._wake = asyncio.Event()
        self._unclaimed = True  # the store may hold due work no engine holds (at start, it may)
        self._lanes: dict[str, Lane] = {}
        self.endpoints = SharedEndpoints(self.store, self.owner)  # breakers and pauses, shared by replicas
        self._next_due = float("inf")  # earliest retry this process scheduled
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._halted: dict[str, int] = {}  # id -> generation: a 410 seen, its suspension being stored
        self._outage = Outage("delivery")

    def wake(self) -> None:
        """Work nobody holds was stored (an intake's commit that was not handed over, a dead
        replica's work freed): look for it now rather than at the next poll."""
        self._unclaimed = True
        self._wake.set()

    def running_low(self) -> None:
        """A lane wants more: claim now if the store may hold unclaimed work. With every commit
        handed over to the lanes, a claim would find nothing; the poll still looks each second."""
        if self._unclaimed:
            self._wake.set()

    def trusted(self) -> bool:
        """Whether the leases this engine holds are surely its own: false once its heartbeat is
        late enough that other replicas may have taken its work over."""
        return self.liveness is None or self.liveness.trusted()

    def fence(self) -> None:
        """This replica was declared dead: what the lanes hold goes back, untried (the store
        applies that only where the lease is still this engine's). Requests in flight end, and
        their outcomes meet the same fence."""
        for lane in self._lanes.values():
            lane.give_back()

    def sends(self, integration_type: str) -> bool:
        return integration_type in HTTP_TYPES or integration_type in self.records

    def delivering(self, integration: AppliedIntegration) -> bool:
        """Whether new work starts for it: applied, active, not suspended, and not halted here
        by a 410 whose suspension is still being stored."""
        return integration.delivering and self._halted.get(integration.id) != integration.generation

    # --- deliveries handed over by the intake as they are committed ---------------------------------

    def lease(self, integration_id: str, now: float) -> tuple[str, float] | None:
        """Take a new delivery of this integration straight from the intake's commit, or leave
        it to the claim query: paced and batching integrations, a full lane, a stopping engine."""
        if self._closing or not self.trusted():
            return None
        integration = self.reconciler.snapshot.applied.get(integration_id)
        if integration is None or not self.delivering(integration) or not self.sends(integration.spec.type):
            return None
        profile = self.profiles.of(integration)
        if not profile.takes_handoff:
            return None
        lane = self._lanes.get(integration_id)
        if lane is not None and lane.room() <= 0:
            return None
        return self.owner, now + self.lease_seconds([profile])

    def adopt(self, deliveries: list[DueDelivery]) -> None:
        """Deliveries committed with this engine's lease: into their lanes at once."""
        by_integration: dict[str, list[DueDelivery]] = {}
        for delivery in deliveries:
            by_integration.setdefault(delivery.integration_id, []).append(delivery)
        for integration_id, group in by_integration.items():
            if self._closing:  # leased but not taken: back to the store untried
                for delivery in group:
                    self.report(Outcome(delivery.id, "pending", 0, time.time()))
                continue
            self._lane(integration_id).submit(group)

    # --- the dispatcher ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        writer = asyncio.create_task(self.outcomes.run())
        follower = asyncio.create_task(self.endpoints.follow(stop))
        pruned_at = 0.0
        renewed_at = time.time()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    if time.time() - renewed_at > RENEW_EVERY_SECONDS:
                        renewed_at = time.time()
                        await self._renew_leases(renewed_at)
                    self._unclaimed = False  # before the query: a wake meanwhile sets it again
                    claimed, more = await self._claim_round()
                    if more:  # the store may hold more than this round could take
                        self._unclaimed = True
                    if self.retention_seconds and time.time() - pruned_at > PRUNE_EVERY_SECONDS:
                        pruned_at = time.time()
                        # never the election's lock: a worker must not become the controller by pruning
                        await self.store.prune(pruned_at - self.retention_seconds)
                except StoreUnavailable as exc:
                    # the backoff, whole: a wake-up (each lane that runs low sends one) would
                    # otherwise make a claim storm of the outage; lanes and intake's hand-over go on
                    self._next_due = float("inf")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._outage.failed(exc))
                    continue
                except Exception:
                    log.exception("claiming deliveries failed; retrying")
                    claimed, self._unclaimed = 0, True
                else:
                    self._outage.recovered()
                if claimed >= CLAIM_LIMIT:
                    continue  # more is due: claim again at once
                # sleep until woken, until the earliest retry we scheduled, or one poll interval
                wait = min(POLL_SECONDS, max(0.0, self._next_due - time.time()))
                self._next_due = float("inf")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wake, stop), timeout=wait)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await self._shutdown(writer)

    async def _claim_round(self) -> tuple[int, bool]:
        """Claim due work into the lanes with room: (how many, whether the store may hold more
        than this round took: a claim came back full, or a lane had no room for its share)."""
        if not self.trusted():  # not registered yet, or the heartbeat is late: claim nothing
            return 0, True
        snapshot = self.reconciler.snapshot
        room = {lane_id: lane.room() for lane_id, lane in self._lanes.items()}
        sending = [a for a in snapshot.applied.values() if self.delivering(a) and self.sends(a.spec.type)]
        candidates = [self.profiles.of(a) for a in sending if room.get(a.id, LANE_BUFFER) > 0]
        more = len(candidates) < len(sending)
        if not candidates:
            return 0, more
        lease = self.lease_seconds(candidates)
        now = time.time()
        # An integration paced by rateLimit.perSecond gets only what it can send within half a
        # lease: claimed work must not outlive its lease and be claimed twice.
        unpaced = [p.id for p in candidates if p.per_second is None]
        groups: list[tuple[list[str], int]] = [(unpaced, CLAIM_LIMIT)] if unpaced else []
        for paced in (p for p in candidates if p.per_second is not None):
            held = LANE_BUFFER - room.get(paced.id, LANE_BUFFER)
            budget = int((paced.per_second or 0) * lease / 2) - held
            groups.append(([paced.id], max(0, min(room.get(paced.id, LANE_BUFFER), budget))))
        count = 0
        for ids, limit in groups:
            if limit <= 0:
                continue
            # each claim's deliveries go to their lanes before the next claim: should that one
            # fail (the store went away), what is leased already is sent, not left to its lease
            claimed = await self.store.claim(self.owner, ids, now, limit, lease)
            more = more or len(claimed) >= limit
            by_integration: dict[str, list[DueDelivery]] = {}
            for delivery in claimed:
                by_integration.setdefault(delivery.integration_id, []).append(delivery)
            for integration_id, deliveries in by_integration.items():
                self._lane(integration_id).submit(deliveries)
            count += len(claimed)
        return count, more

    async def _renew_leases(self, now: float) -> None:
        """Keep the leases of what the lanes hold (queued or in flight) from expiring."""
        applied = self.reconciler.snapshot.applied
        held = [d.id for lane in self._lanes.values() for d in lane.held()]
        if held:
            lease = self.lease_seconds([self.profiles.of(a) for a in applied.values()])
            await self.store.renew_leases(self.owner, held, now + lease)
        self.profiles.keep_only(applied)  # what was worked out for versions no longer applied goes

    def lease_seconds(self, profiles: list[DeliveryProfile]) -> float:
        """How long a claim of these integrations' work holds: long enough for the slowest
        request twice over, and never under LEASE_MIN_SECONDS."""
        return max(LEASE_MIN_SECONDS, 2 * max((p.timeout_seconds for p in profiles), default=10.0) + 60)

    def endpoint_state(self, integration: AppliedIntegration) -> EndpointState:
        """The breaker and the Retry-After pause that hold an integration's endpoint now, as
        every replica shares them (for the health monitor; creates neither)."""
        return self.endpoints.state(self.profiles.of(integration), time.time())

    def _lane(self, integration_id: str) -> Lane:
        lane = self._lanes.get(integration_id)
        if lane is None:
            lane = self._lanes[integration_id] = Lane(self, integration_id)
        return lane

    async def drain(self, integration_id: str) -> None:
        """Wait for an integration's in-flight requests; give back what it had not started."""
        lane = self._lanes.pop(integration_id, None)
        if lane is not None:
            await lane.close()
            await self.flush()  # what finished is recorded before the removal goes on

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        self._closing = True
        for lane in list(self._lanes.values()):
            try:
                await lane.close()
            except Exception:  # the others still close, outcomes are still written
                log.exception("a lane failed to close", extra={"fields": {"integration": lane.integration_id}})
        self._lanes.clear()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.outcomes.close()
        await writer
        try:
            await self.store.release_leases(self.owner)
        except StoreUnavailable as exc:  # the leases expire instead, and any replica takes the work
            log.warning("could not give back claimed deliveries at shutdown", extra={"fields": {"reason": exc.reason}})
        await self.http.close()
        for sink in self.records.values():
            await sink.close()

    # --- outcomes ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until the outcomes reported so far are written."""
        await self.outcomes.flush()

    def report(self, outcome: Outcome) -> None:
        if outcome.attempt is not None:
            self.stats.observe(outcome.attempt)
        if outcome.status in ("pending", "failed"):
            self._next_due = min(self._next_due, outcome.next_attempt_at)
        self.outcomes.put(outcome)

    # --- the test endpoint and a gone endpoint --------------------------------------------------------

    async def test_send(self, integration: AppliedIntegration, message: str | None = None) -> tuple[str, SinkResult]:
        """The test endpoint: an `integration.test` event through the integration's real sink, at
        once and once (no retries), recorded in its log. A record sink checks its target instead
        of writing to it. Returns the test event's id and the result."""
        event_id = new_id("evt")
        envelope = {
            "id": event_id,
            "event": "integration.test",
            "timestamp": now_timestamp(),
            "data": {"integrationId": integration.id, "message": message or "Test message from the integration layer"},
        }
        started = time.time()
        record_sink = self.records.get(integration.spec.type)
        if record_sink is not None:
            result = await record_sink.check(integration)
        else:
            body, problem = self.profiles.of(integration).render([envelope], 0, None)
            if problem is not None:
                result = SinkResult(ok=False, status=None, latency_ms=0.0, error=problem, endpoint_failure=False)
            else:
                result = await self.http.send(integration, body, event_id)
        attempt = attempt_of(
            result, delivery_id=f"test:{event_id}", integration_id=integration.id, at=started, trigger="test"
        )
        await self.store.log_attempts([attempt])
        return event_id, result

    def gone(self, integration: AppliedIntegration, detail: str) -> None:
        """A 410 from the target: the partner retired the endpoint. Suspend, keep the queue.

        Halted here at once (nothing more is sent while the suspension is stored), and
        suspended through the reconciler, which publishes it like any runtime override.
        Scheduled, not awaited: the send that saw the 410 must finish first, since a reconcile
        pass may be waiting for this integration's requests to end (a removal's drain)."""
        reason = f"the endpoint answered 410 Gone ({detail[:200]}); resume once it is replaced"
        log.warning("integration suspended: endpoint gone", extra={"fields": {"integration": integration.id}})
        self._halted[integration.id] = integration.generation

        async def suspend() -> None:
            try:
                with contextlib.suppress(KeyError):
                    await self.reconciler.suspend(integration.id, "delivery", reason)
            except StoreUnavailable as exc:
                # not stored, so not suspended: the next request meets the 410 and asks again
                log.warning(
                    "could not suspend the integration: the store is unavailable",
                    extra={"fields": {"integration": integration.id, "reason": exc.reason}},
                )
            finally:
                # the published snapshot says suspended from here on (or the integration is gone)
                if self._halted.get(integration.id) == integration.generation:
                    del self._halted[integration.id]

        task = asyncio.create_task(suspend())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
