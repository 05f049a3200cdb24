"""A lane: one integration's queue of claimed deliveries, sent in order of creation.

Up to `concurrency` workers take units (a delivery, or a batch) from the queue, each sending
one at a time; they start when work arrives and end when the queue is empty. A worker per
request in flight, rather than a task per request, keeps the event loop's cost per delivery
low. A lane only holds what it can send soon, so claimed work never outlives its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.delivery.attempts import attempt_of
from reconciler.delivery.breakers import Turn
from reconciler.delivery.pacing import Pacer
from reconciler.delivery.profile import DEFAULT_CONCURRENCY, DeliveryProfile
from reconciler.delivery.retry import RetryPolicy
from reconciler.events.envelope import new_id
from reconciler.registry import AppliedIntegration
from reconciler.sinks import SinkResult
from reconciler.store import Attempt, DueDelivery, Outcome, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.delivery.engine import DeliveryEngine

log = logging.getLogger("reconciler.delivery")

LANE_BUFFER = 512  # deliveries a lane holds in memory (claimed, not yet sent)
LANE_REFILL = LANE_BUFFER // 2  # below this, a lane asks the dispatcher for more


@dataclass(frozen=True)
class Unit:
    """What one request carries: one delivery, or a batch with its own stable id."""

    deliveries: list[DueDelivery]
    batch_id: str | None

    @property
    def message_id(self) -> str:
        return self.batch_id or self.deliveries[0].event_id


class Lane:
    """One integration's claimed deliveries and the workers that send them."""

    def __init__(self, engine: DeliveryEngine, integration_id: str) -> None:
        self.engine = engine
        self.integration_id = integration_id
        self.queue: deque[DueDelivery] = deque()
        self.inflight = 0
        self._closing = False
        self._profile: DeliveryProfile | None = None
        self._pacer = Pacer(None)
        self._batch_pacer: Pacer | None = None
        self._concurrency = DEFAULT_CONCURRENCY
        self._workers: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[Any]] = set()  # workers in a request, which a close lets finish
        self._taken: dict[int, Unit] = {}  # units taken from the queue and not yet reported

    def room(self) -> int:
        return LANE_BUFFER - len(self.queue) - self.inflight

    def held(self) -> list[DueDelivery]:
        """What this lane holds leases on: queued, waiting for its turn, or in flight."""
        return [*self.queue, *(d for unit in self._taken.values() for d in unit.deliveries)]

    def submit(self, deliveries: list[DueDelivery]) -> None:
        self.queue.extend(deliveries)
        self._staff()

    def _staff(self) -> None:
        """Start workers for the queued work, up to the integration's concurrency."""
        wanted = min(self._concurrency, len(self._workers) + len(self.queue))
        while not self._closing and len(self._workers) < wanted:
            task = asyncio.create_task(self._work())
            self._workers.add(task)  # the loop holds tasks only weakly
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if self.queue:
            self._staff()  # work arrived as it stopped, or it stopped for a lowered concurrency

    async def close(self) -> None:
        """Stop starting requests, wait for those in flight, give back the rest. A worker still
        waiting for its turn (pacing, batchDelay) stops waiting: its unit goes back too."""
        self._closing = True
        for worker in self._workers - self._sending:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._release(list(self.queue))
        self.queue.clear()

    def give_back(self) -> None:
        """Everything queued goes back to the store untried (its lease may be lost)."""
        self._release(list(self.queue))
        self.queue.clear()

    async def _work(self) -> None:
        while self.queue and not self._closing and len(self._workers) <= self._concurrency:
            try:
                await self._send_next()
            except StoreUnavailable as exc:  # a batch could not be fixed in the store: it goes back
                log.warning(
                    "batch not sent: the store is unavailable; it is claimed again once it is back",
                    extra={"fields": {"integration": self.integration_id, "reason": exc.reason}},
                )
            except Exception:  # one bad unit must not stop the lane: its deliveries go back
                log.exception("could not send a delivery", extra={"fields": {"integration": self.integration_id}})

    async def _send_next(self) -> None:
        # the snapshot as it is now: a version applied, suspended or removed meanwhile counts
        integration = self.engine.reconciler.snapshot.applied.get(self.integration_id)
        if integration is None or not self.engine.delivering(integration):
            self._release(list(self.queue))  # removed or suspended meanwhile: back to the store
            self.queue.clear()
            return
        profile = self.engine.profiles.of(integration)
        if self._configure(profile):
            self._staff()
        if not profile.batching:
            unit = Unit([self.queue.popleft()], None)  # the common case, without a coroutine
        else:
            unit = await self._next_batch(profile)
        key = id(unit)
        self._taken[key] = unit
        try:
            turn = await self._wait_turn(profile, unit)
            if turn is None:
                return
            self.inflight += len(unit.deliveries)
            task = asyncio.current_task()
            assert task is not None
            self._sending.add(task)  # from here on a close waits for the request to end
            try:
                await self._send(integration, profile, unit, turn)
            finally:
                self._sending.discard(task)
                self.inflight -= len(unit.deliveries)
        finally:
            del self._taken[key]
            if len(self.queue) + self.inflight < LANE_REFILL:
                self.engine.running_low()  # claim more now rather than at the next poll, if there is any

    async def _wait_turn(self, profile: DeliveryProfile, unit: Unit) -> Turn | None:
        """Wait for pacing and batchDelay; the breaker's go (as the probe, or not), or None when
        the unit went back (a pause holds, the breaker is open, the lane is closing)."""
        try:
            if self._pacer.interval:
                await self._pacer.wait_turn()
            if unit.batch_id and self._batch_pacer is not None:
                await self._batch_pacer.wait_turn()  # batchDelay between batch requests
            # decided only now, after waiting: a request that failed meanwhile may have opened
            # the breaker, and a drain may have begun
            now = time.time()
            if not self.engine.trusted():  # its lease may be another replica's by now: not sent
                self._release(unit.deliveries)
                return None
            endpoints = self.engine.endpoints
            paused_until = endpoints.paused_until(profile)
            if self._closing or paused_until > now:
                self._release(unit.deliveries, until=None if self._closing else paused_until)
                return None
            turn = endpoints.turn(profile, now)  # in memory: no store call while the endpoint is healthy
            if turn is None:  # half-open: one request of every replica's probes
                turn = await endpoints.claim_probe(profile, now)
            if not turn.go:
                self._release(unit.deliveries, until=turn.retry_at)
                return None
            return turn
        except BaseException:
            self._release(unit.deliveries)
            raise

    def _configure(self, profile: DeliveryProfile) -> bool:
        """Pacing and concurrency of the applied version; True when they changed."""
        if profile is self._profile:
            return False
        self._pacer = Pacer(profile.per_second)
        self._batch_pacer = Pacer(1000 / profile.batch_delay_ms) if profile.batch_delay_ms else None
        self._concurrency = profile.concurrency
        self._profile = profile
        return True

    async def _next_batch(self, profile: DeliveryProfile) -> Unit:
        first = self.queue.popleft()
        if first.batch_id:  # a retried batch keeps its members and its id
            members = [first] + [d for d in self.queue if d.batch_id == first.batch_id]
            for member in members[1:]:
                self.queue.remove(member)
            return Unit(members, first.batch_id)
        members = [first]
        for delivery in list(self.queue):
            if len(members) >= profile.batch_size:
                break
            if delivery.batch_id is None and delivery.subscription == first.subscription:
                members.append(delivery)
                self.queue.remove(delivery)
        batch_id = new_id("bat")
        try:
            await self.engine.store.assign_batch([d.id for d in members], batch_id, self.engine.owner)
        except BaseException:  # a close while the batch was being fixed: its members go back
            self._release(members)
            raise
        return Unit(members, batch_id)

    async def _send(self, integration: AppliedIntegration, profile: DeliveryProfile, unit: Unit, turn: Turn) -> None:
        try:
            result = await self._request(integration, profile, unit)
        except Exception as exc:  # a bug or an odd input: record it as a failed attempt, retry as usual
            log.exception("delivery failed unexpectedly", extra={"fields": {"integration": self.integration_id}})
            result = SinkResult(
                ok=False,
                status=None,
                latency_ms=0.0,
                error=f"internal error: {type(exc).__name__}",
                endpoint_failure=False,
            )
        now = time.time()
        endpoints = self.engine.endpoints
        if result.retry_after is not None and result.status in (429, 503):
            # its word holds for every request to that URL, from every replica
            await endpoints.pause(profile, now + result.retry_after)
        if result.ok:
            if endpoints.needs_success(profile, turn):  # most successes change nothing shared
                await endpoints.succeeded(profile)
        elif result.endpoint_failure:
            await endpoints.failed(profile, now, turn)
        elif turn.probe is not None:
            await endpoints.settled(turn, profile)  # says nothing about the endpoint's health, but ends the probe
        # one delay for the whole unit: a batch's members stay together for its retry
        policy = profile.policy
        delay = 0.0 if result.ok else _retry_delay(result, policy, unit.deliveries[0].attempts + 1)
        for delivery in unit.deliveries:
            self.engine.report(_outcome(delivery, result, policy, now, unit.batch_id, delay))
        if result.gone:
            self.engine.gone(integration, result.excerpt or "HTTP 410")

    def _request(self, integration: AppliedIntegration, profile: DeliveryProfile, unit: Unit) -> Awaitable[SinkResult]:
        """The sink's call for this unit (awaited by the caller: one coroutine fewer per request)."""
        record_sink = self.engine.records.get(integration.spec.type)
        if record_sink is not None:
            return record_sink.write(integration, [d.envelope for d in unit.deliveries], unit.message_id)
        first = unit.deliveries[0]
        if first.body is not None and unit.batch_id is None and profile.template(first.subscription) is None:
            return self.engine.http.send(integration, first.body, unit.message_id)  # the envelope as stored
        body, problem = profile.render([d.envelope for d in unit.deliveries], first.subscription, unit.batch_id)
        if problem is not None:
            return _ready(SinkResult(ok=False, status=None, latency_ms=0.0, error=problem, endpoint_failure=False))
        return self.engine.http.send(integration, body, unit.message_id)

    def _release(self, deliveries: list[DueDelivery], until: float | None = None) -> None:
        """Back to the store untried: status and attempts unchanged, lease cleared."""
        when = until if until is not None else time.time()
        for delivery in deliveries:
            status = "failed" if delivery.attempts else "pending"
            self.engine.report(Outcome(delivery.id, status, delivery.attempts, when))


async def _ready(result: SinkResult) -> SinkResult:
    return result


def _retry_delay(result: SinkResult, policy: RetryPolicy, attempt: int) -> float:
    if result.retry_after is not None and result.status in (429, 503):
        return result.retry_after
    return policy.delay_after(attempt)


def _outcome(
    delivery: DueDelivery, result: SinkResult, policy: RetryPolicy, now: float, batch_id: str | None, delay: float
) -> Outcome:
    number = delivery.attempts + 1

    def attempt(outcome: str) -> Attempt:
        return attempt_of(
            result,
            delivery_id=delivery.id,
            integration_id=delivery.integration_id,
            at=now,
            trigger="scheduled",
            number=number,
            outcome=outcome,
            batch_id=batch_id,
        )

    if result.ok:
        return Outcome(delivery.id, "delivered", number, now, None, attempt("delivered"))
    if result.gone:
        return Outcome(delivery.id, "failed", number, now, result.error, attempt("gone"))
    if policy.exhausted(number):
        return Outcome(delivery.id, "dead", number, now, result.error, attempt("dead"))
    return Outcome(delivery.id, "failed", number, now + delay, result.error, attempt("failed"))
