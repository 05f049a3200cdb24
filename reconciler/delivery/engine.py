"""The delivery engine: claims due deliveries from the outbox and drives them to the sinks.

A dispatcher claims due deliveries in batches (woken in-process by each intake commit, and
polling once a second for retries and other replicas) and hands them to one lane per
integration. A lane applies the integration's pacing, batching, circuit breaker and retry
policy, and sends through the sink of its type. Outcomes are written in batches. A lane only
takes what it can send soon, so claimed work never outlives its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from reconciler.delivery.pacing import Pacer
from reconciler.delivery.retry import CircuitBreaker, RetryPolicy
from reconciler.events.envelope import new_id, now_timestamp
from reconciler.events.templates import CompiledTemplate, TemplateProblem, compile_template, render_context
from reconciler.manifests.durations import parse_duration
from reconciler.metrics import DeliveryStats
from reconciler.registry import AppliedIntegration
from reconciler.sinks import RecordSink, SinkResult, record_sinks
from reconciler.sinks.http import HttpSink
from reconciler.store import AsyncStore, Attempt, DueDelivery, Outcome, Store

if TYPE_CHECKING:
    from reconciler.reconcile.loop import Reconciler

log = logging.getLogger("reconciler.delivery")

CLAIM_LIMIT = 500  # deliveries per claim query
LANE_BUFFER = 512  # deliveries a lane holds in memory (claimed, not yet sent)
LANE_REFILL = LANE_BUFFER // 2  # below this, a lane asks the dispatcher for more
POLL_SECONDS = 1.0  # retries come due and other replicas enqueue without waking us
LEASE_MIN_SECONDS = 300.0
DEFAULT_CONCURRENCY = 16  # requests in flight per integration without rateLimit.concurrency
OUTCOME_GROUP = 1000
OUTCOME_LINGER_SECONDS = 0.02  # outcomes gather this long before a write (leases cover a crash)
PRUNE_EVERY_SECONDS = 3600.0
RENEW_EVERY_SECONDS = 60.0  # leases of work still held are pushed back this often (a lease is 300 s or more)
HTTP_TYPES = ("api", "webhook")


@dataclass(frozen=True)
class Unit:
    """What one request carries: one delivery, or a batch with its own stable id."""

    deliveries: list[DueDelivery]
    batch_id: str | None

    @property
    def message_id(self) -> str:
        return self.batch_id or self.deliveries[0].event_id


class DeliveryEngine:
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
        self.records = records if records is not None else record_sinks()
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{new_id('w')[-8:]}"
        self.retention_seconds = retention_seconds
        self.stats = DeliveryStats()  # attempts and latency by integration, for /metrics
        self._wake = asyncio.Event()
        self._lanes: dict[str, Lane] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._templates: dict[tuple[str, int, int], CompiledTemplate | None] = {}
        self._outcomes: deque[Any] = deque()  # Outcome, a flush request (a future), _FLUSH
        self._outcome_ready = asyncio.Event()
        self._linger: asyncio.Future[None] | None = None  # the writer's wait for more outcomes
        self._writing = False
        self._next_due = float("inf")  # earliest retry this process scheduled
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._policies: dict[tuple[str, int], RetryPolicy] = {}
        self._breaker_keys: dict[tuple[str, int], str] = {}
        self._timeouts: dict[tuple[str, int], float] = {}
        self._halted: dict[str, int] = {}  # id -> generation: a 410 seen, its suspension being stored

    def wake(self) -> None:
        """An intake committed: look for due work now rather than at the next poll."""
        self._wake.set()

    # --- deliveries handed over by the intake as they are committed ---------------------------------

    def lease(self, integration_id: str, now: float) -> tuple[str, float] | None:
        """Take a new delivery of this integration straight from the intake's commit, or leave
        it to the claim query: paced and batching integrations, a full lane, a stopping engine."""
        if self._closing:
            return None
        integration = self.reconciler.snapshot.applied.get(integration_id)
        if (
            integration is None
            or not self.delivering(integration)
            or not self.sends(integration.spec.type)
            or _per_second(integration) is not None
            or getattr(integration.spec.config, "batchSize", 1) > 1
            or integration.spec.syncFrequency > 0
        ):
            return None
        lane = self._lanes.get(integration_id)
        if lane is not None and lane.room() <= 0:
            return None
        return self.owner, now + self.lease_seconds([integration])

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
        writer = asyncio.create_task(self._write_outcomes())
        pruned_at = 0.0
        renewed_at = time.time()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    if time.time() - renewed_at > RENEW_EVERY_SECONDS:
                        renewed_at = time.time()
                        await self._renew_leases(renewed_at)
                    claimed = await self._claim_round()
                    if self.retention_seconds and time.time() - pruned_at > PRUNE_EVERY_SECONDS:
                        pruned_at = time.time()
                        if await self.store.is_leader():  # one replica prunes
                            await self.store.prune(pruned_at - self.retention_seconds)
                except Exception:
                    log.exception("claiming deliveries failed; retrying")
                    claimed = 0
                if claimed >= CLAIM_LIMIT:
                    continue  # more is due: claim again at once
                # sleep until woken, until the earliest retry we scheduled, or one poll interval
                wait = min(POLL_SECONDS, max(0.0, self._next_due - time.time()))
                self._next_due = float("inf")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wake, stop), timeout=wait)
        finally:
            await self._shutdown(writer)

    async def _claim_round(self) -> int:
        room = {lane_id: lane.room() for lane_id, lane in self._lanes.items()}
        candidates = [
            a
            for a in self.reconciler.snapshot.applied.values()
            if self.delivering(a) and self.sends(a.spec.type) and room.get(a.id, LANE_BUFFER) > 0
        ]
        if not candidates:
            return 0
        lease = self.lease_seconds(candidates)
        now = time.time()
        # An integration paced by rateLimit.perSecond gets only what it can send within half a
        # lease: claimed work must not outlive its lease and be claimed twice.
        unpaced = [a.id for a in candidates if _per_second(a) is None]
        groups: list[tuple[list[str], int]] = [(unpaced, CLAIM_LIMIT)] if unpaced else []
        for paced in (a for a in candidates if _per_second(a) is not None):
            budget = int((_per_second(paced) or 0) * lease / 2) - (LANE_BUFFER - room.get(paced.id, LANE_BUFFER))
            groups.append(([paced.id], max(0, min(room.get(paced.id, LANE_BUFFER), budget))))
        claimed: list[DueDelivery] = []
        for ids, limit in groups:
            if limit > 0:
                claimed += await self.store.claim(self.owner, ids, now, limit, lease)
        by_integration: dict[str, list[DueDelivery]] = {}
        for delivery in claimed:
            by_integration.setdefault(delivery.integration_id, []).append(delivery)
        for integration_id, deliveries in by_integration.items():
            self._lane(integration_id).submit(deliveries)
        return len(claimed)

    async def _renew_leases(self, now: float) -> None:
        """Keep the leases of what the lanes hold (queued or in flight) from expiring."""
        held = [d.id for lane in self._lanes.values() for d in lane.held()]
        if held:
            lease = self.lease_seconds(list(self.reconciler.snapshot.applied.values()))
            await self.store.renew_leases(self.owner, held, now + lease)
        self._prune_caches()

    def _prune_caches(self) -> None:
        """Drop what was worked out for versions of integrations that are no longer applied."""
        current = {(a.id, a.generation) for a in self.reconciler.snapshot.applied.values()}
        self._policies = {k: v for k, v in self._policies.items() if k in current}
        self._breaker_keys = {k: v for k, v in self._breaker_keys.items() if k in current}
        self._timeouts = {k: v for k, v in self._timeouts.items() if k in current}
        self._templates = {k: v for k, v in self._templates.items() if (k[0], k[1]) in current}

    def sends(self, integration_type: str) -> bool:
        return integration_type in HTTP_TYPES or integration_type in self.records

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
        self._queue_outcome(_FLUSH)
        await writer
        await self.store.release_leases(self.owner)
        await self.http.close()
        for sink in self.records.values():
            await sink.close()

    # --- outcomes ----------------------------------------------------------------------------------

    async def _write_outcomes(self) -> None:
        self._writing = True
        try:
            while await self._write_group():
                pass
        finally:
            self._writing = False

    async def _write_group(self) -> bool:
        """Write the outcomes queued (up to a group); False once the final flush is written."""
        while not self._outcomes:
            self._outcome_ready.clear()
            await self._outcome_ready.wait()
        if isinstance(self._outcomes[0], Outcome) and len(self._outcomes) < OUTCOME_GROUP:
            # Linger a moment: under load, outcomes arrive one by one, and a thread hop per
            # handful of them costs the event loop more than the writes themselves. A flush
            # (a drain, a shutdown) ends the wait.
            loop = asyncio.get_running_loop()
            self._linger = loop.create_future()
            timer = loop.call_later(OUTCOME_LINGER_SECONDS, _settle, self._linger)
            try:
                await self._linger
            finally:
                timer.cancel()
                self._linger = None
        items = [self._outcomes.popleft() for _ in range(min(OUTCOME_GROUP, len(self._outcomes)))]
        group = [item for item in items if isinstance(item, Outcome)]
        if group:
            try:
                await self.store.record(group)
            except Exception:
                # the leases expire and the deliveries are tried again: at-least-once holds
                log.exception("could not record delivery outcomes")
        for item in items:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_result(None)
        return not any(item is _FLUSH for item in items)

    async def flush(self) -> None:
        """Wait until the outcomes reported so far are written."""
        if not self._writing:
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue_outcome(written)
        await written

    def report(self, outcome: Outcome) -> None:
        if outcome.attempt is not None:
            self.stats.observe(outcome.attempt)
        if outcome.status in ("pending", "failed"):
            self._next_due = min(self._next_due, outcome.next_attempt_at)
        self._queue_outcome(outcome)

    def _queue_outcome(self, item: Any) -> None:
        self._outcomes.append(item)
        if len(self._outcomes) == 1:
            self._outcome_ready.set()
        if not isinstance(item, Outcome) and self._linger is not None:
            _settle(self._linger)  # someone waits for the write: no lingering

    # --- per-integration helpers used by lanes --------------------------------------------------------

    def breaker(self, integration: AppliedIntegration) -> CircuitBreaker:
        """One breaker per endpoint (scheme and host), shared by the integrations that post there."""
        generation = (integration.id, integration.generation)
        key = self._breaker_keys.get(generation)
        if key is None:
            endpoint = getattr(integration.spec.config, "endpoint", None) or integration.id
            parts = urlsplit(endpoint if "${" not in endpoint else integration.id)
            key = self._breaker_keys[generation] = (
                f"{parts.scheme}://{parts.netloc}" if parts.netloc else integration.id
            )
        return self._breakers.setdefault(key, CircuitBreaker())

    def template(self, integration: AppliedIntegration, subscription: int) -> CompiledTemplate | None:
        key = (integration.id, integration.generation, subscription)
        if key not in self._templates:
            source = None
            if 0 <= subscription < len(integration.spec.webhooks):
                source = integration.spec.webhooks[subscription].template
            if source is None:
                source = getattr(integration.spec.config, "template", None)
            self._templates[key] = compile_template(source) if source is not None else None
        return self._templates[key]

    def lease_seconds(self, integrations: list[AppliedIntegration]) -> float:
        """How long a claim of these integrations' work holds: long enough for the slowest
        request twice over, and never under LEASE_MIN_SECONDS."""
        return max(LEASE_MIN_SECONDS, 2 * max(map(self._timeout, integrations), default=10.0) + 60)

    def _timeout(self, integration: AppliedIntegration) -> float:
        key = (integration.id, integration.generation)
        seconds = self._timeouts.get(key)
        if seconds is None:
            seconds = self._timeouts[key] = parse_duration(getattr(integration.spec.config, "timeout", "10s"))
        return seconds

    def retry_policy(self, integration: AppliedIntegration) -> RetryPolicy:
        key = (integration.id, integration.generation)
        policy = self._policies.get(key)
        if policy is None:
            retry = integration.spec.retry
            policy = RetryPolicy.from_spec(retry.schedule if retry else None, retry.maxAttempts if retry else None)
            self._policies[key] = policy
        return policy

    def render(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], subscription: int, batch_id: str | None
    ) -> tuple[bytes, str | None]:
        """The request body for these envelopes: the subscription's template, else the envelope
        (a list of them when the integration batches); or why the template failed."""
        batching = getattr(integration.spec.config, "batchSize", 1) > 1
        try:
            template = self.template(integration, subscription)
            if template is None:
                payload: Any = envelopes if batching else envelopes[0]
            else:
                context = render_context(envelopes, {"id": integration.id, "name": integration.spec.name}, batch_id)
                payload = template.render(context)
            return _ENCODER.encode(payload).encode(), None
        except (TemplateProblem, TypeError, ValueError) as exc:
            return b"", f"the template failed: {getattr(exc, 'message', exc)}"

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
            body, problem = self.render(integration, [envelope], 0, None)
            if problem is not None:
                result = SinkResult(ok=False, status=None, latency_ms=0.0, error=problem, endpoint_failure=False)
            else:
                result = await self.http.send(integration, body, event_id)
        attempt = Attempt(
            f"test:{event_id}",
            integration.id,
            started,
            1,
            "test",
            "delivered" if result.ok else "failed",
            None,
            result.status,
            round(result.latency_ms, 2),
            _clean(result.excerpt),
            _clean(result.error),
        )
        await self.store.log_attempts([attempt])
        return event_id, result

    def delivering(self, integration: AppliedIntegration) -> bool:
        """Whether new work starts for it: applied, active, not suspended, and not halted here
        by a 410 whose suspension is still being stored."""
        return integration.delivering and self._halted.get(integration.id) != integration.generation

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
            finally:
                # the published snapshot says suspended from here on (or the integration is gone)
                if self._halted.get(integration.id) == integration.generation:
                    del self._halted[integration.id]

        task = asyncio.create_task(suspend())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_FLUSH: Any = object()
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not one per body


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _per_second(integration: AppliedIntegration) -> float | None:
    limit = getattr(integration.spec.config, "rateLimit", None)
    return limit.perSecond if limit is not None else None


class Lane:
    """One integration's queue of claimed deliveries, sent in order of creation.

    Up to `concurrency` workers take units (a delivery, or a batch) from the queue, each
    sending one at a time; they start when work arrives and end when the queue is empty. A
    worker per request in flight, rather than a task per request, keeps the event loop's cost
    per delivery low."""

    def __init__(self, engine: DeliveryEngine, integration_id: str) -> None:
        self.engine = engine
        self.integration_id = integration_id
        self.queue: deque[DueDelivery] = deque()
        self.inflight = 0
        self._closing = False
        self._pacer: Pacer | None = None
        self._batch_pacer: Pacer | None = None
        self._concurrency = DEFAULT_CONCURRENCY
        self._pacing_generation = -1
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

    async def _work(self) -> None:
        while self.queue and not self._closing and len(self._workers) <= self._concurrency:
            try:
                await self._send_next()
            except Exception:  # one bad unit must not stop the lane: its deliveries go back
                log.exception("could not send a delivery", extra={"fields": {"integration": self.integration_id}})

    async def _send_next(self) -> None:
        integration = self.engine.reconciler.snapshot.applied.get(self.integration_id)
        if integration is None or not self.engine.delivering(integration):
            self._release(list(self.queue))  # removed or suspended meanwhile: back to the store
            self.queue.clear()
            return
        if self._configure(integration):
            self._staff()
        pacer = self._pacer
        assert pacer is not None
        if getattr(integration.spec.config, "batchSize", 1) <= 1:
            unit = Unit([self.queue.popleft()], None)  # the common case, without a coroutine
        else:
            unit = await self._next_unit(integration)
        key = id(unit)
        self._taken[key] = unit
        try:
            try:
                if pacer.interval:
                    await pacer.wait_turn()
                if unit.batch_id and self._batch_pacer is not None:
                    await self._batch_pacer.wait_turn()  # batchDelay between batch requests
                # decided only now, after waiting: a request that failed meanwhile may have opened
                # the breaker, and a drain may have begun
                breaker = self.engine.breaker(integration)
                if self._closing or not breaker.allows(time.time()):
                    self._release(unit.deliveries, until=None if self._closing else breaker.retry_at(time.time()))
                    return
            except BaseException:
                self._release(unit.deliveries)
                raise
            self.inflight += len(unit.deliveries)
            task = asyncio.current_task()
            assert task is not None
            self._sending.add(task)  # from here on a close waits for the request to end
            try:
                await self._send(integration, unit, breaker)
            finally:
                self._sending.discard(task)
                self.inflight -= len(unit.deliveries)
        finally:
            del self._taken[key]
            if len(self.queue) + self.inflight < LANE_REFILL:
                self.engine.wake()  # running low: claim more now rather than at the next poll

    def _configure(self, integration: AppliedIntegration) -> bool:
        """Pacing and concurrency of the applied generation; True when they changed."""
        if self._pacing_generation == integration.generation:
            return False
        limit = getattr(integration.spec.config, "rateLimit", None)
        self._pacer = Pacer(limit.perSecond if limit else None)
        delay_ms = getattr(integration.spec.config, "batchDelay", 0)
        self._batch_pacer = Pacer(1000 / delay_ms) if delay_ms else None
        self._concurrency = (limit.concurrency if limit else None) or DEFAULT_CONCURRENCY
        self._pacing_generation = integration.generation
        return True

    async def _next_unit(self, integration: AppliedIntegration) -> Unit:
        first = self.queue.popleft()
        size = getattr(integration.spec.config, "batchSize", 1)
        if size <= 1:
            return Unit([first], None)
        if first.batch_id:  # a retried batch keeps its members and its id
            members = [first] + [d for d in self.queue if d.batch_id == first.batch_id]
            for member in members[1:]:
                self.queue.remove(member)
            return Unit(members, first.batch_id)
        members = [first]
        for delivery in list(self.queue):
            if len(members) >= size:
                break
            if delivery.batch_id is None and delivery.subscription == first.subscription:
                members.append(delivery)
                self.queue.remove(delivery)
        batch_id = new_id("bat")
        try:
            await self.engine.store.assign_batch([d.id for d in members], batch_id)
        except BaseException:  # a close while the batch was being fixed: its members go back
            self._release(members)
            raise
        return Unit(members, batch_id)

    async def _send(self, integration: AppliedIntegration, unit: Unit, breaker: CircuitBreaker) -> None:
        policy = self.engine.retry_policy(integration)
        try:
            result = await self._request(integration, unit)
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
        if result.retry_after is not None and result.status in (429, 503):
            breaker.pause(now + result.retry_after)  # the endpoint's word holds for every request to it
        if result.ok:
            breaker.success()
        elif result.endpoint_failure:
            breaker.failure(now)
        else:
            breaker.settle()  # says nothing about the endpoint's health, but ends a half-open trial
        # one delay for the whole unit: a batch's members stay together for its retry
        delay = 0.0 if result.ok else _retry_delay(result, policy, unit.deliveries[0].attempts + 1)
        for delivery in unit.deliveries:
            self.engine.report(_outcome(delivery, result, policy, now, unit.batch_id, delay))
        if result.gone:
            self.engine.gone(integration, result.excerpt or "HTTP 410")

    def _request(self, integration: AppliedIntegration, unit: Unit) -> Awaitable[SinkResult]:
        """The sink's call for this unit (awaited by the caller: one coroutine fewer per request)."""
        record_sink = self.engine.records.get(integration.spec.type)
        if record_sink is not None:
            return record_sink.write(integration, [d.envelope for d in unit.deliveries], unit.message_id)
        first = unit.deliveries[0]
        if (
            first.body is not None
            and unit.batch_id is None
            and self.engine.template(integration, first.subscription) is None
        ):
            return self.engine.http.send(integration, first.body, unit.message_id)  # the envelope as stored
        body, problem = self.engine.render(
            integration, [d.envelope for d in unit.deliveries], first.subscription, unit.batch_id
        )
        if problem is not None:
            return _ready(SinkResult(ok=False, status=None, latency_ms=0.0, error=problem, endpoint_failure=False))
        return self.engine.http.send(integration, body, unit.message_id)

    def _release(self, deliveries: list[DueDelivery], until: float | None = None) -> None:
        """Back to the store untried: status and attempts unchanged, lease cleared."""
        when = until if until is not None else time.time()
        for delivery in deliveries:
            status = "failed" if delivery.attempts else "pending"
            self.engine.report(Outcome(delivery.id, status, delivery.attempts, when))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        return Attempt(
            delivery.id,
            delivery.integration_id,
            now,
            number,
            "scheduled",
            outcome,
            batch_id,
            result.status,
            round(result.latency_ms, 2),
            _clean(result.excerpt),
            _clean(result.error),
        )

    if result.ok:
        return Outcome(delivery.id, "delivered", number, now, None, attempt("delivered"))
    if result.gone:
        return Outcome(delivery.id, "failed", number, now, _clean(result.error), attempt("gone"))
    if policy.exhausted(number):
        return Outcome(delivery.id, "dead", number, now, _clean(result.error), attempt("dead"))
    return Outcome(delivery.id, "failed", number, now + delay, _clean(result.error), attempt("failed"))


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a partner's response can."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text
