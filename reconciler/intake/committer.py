"""Event intake: one code path for every source (Python, HTTP trigger, CLI, inbound, syncs).

An event is checked against the catalog, routed to its integrations, and committed with one
delivery per integration before `emit` returns (the transactional outbox). Concurrent
emits share one commit: while a transaction is being written, new events wait in a queue and
go together in the next one (group commit), so durability costs one disk sync per group,
not per event.

When the store is unavailable, `emit` raises StoreUnavailable (the API answers 503 with
Retry-After) and nothing is acknowledged. The committer then backs off: for the backoff's
length, events are refused at once instead of each waiting on another attempt to reach a
database that just failed; the first commit after it tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.events.envelope import (
    EventChecker,
    EventRejected,
    envelope_json,
    new_id,
    now_timestamp,
    serialize_data,
)
from reconciler.intake.routing import Router
from reconciler.registry import Snapshot, SnapshotSource
from reconciler.store import AsyncStore, DueDelivery, NewDelivery, NewEvent, Outage, Store, StoreUnavailable
from reconciler.store.records import StoredEvent

log = logging.getLogger("reconciler.intake")

MAX_GROUP = 1000  # events per commit; bounds a transaction's size under a burst
# Commits in flight at once. SQLite has one writer: a second commit would only wait for the
# first. PostgreSQL commits concurrent transactions together (its own group commit of the WAL):
# with a few in flight, one group's round trips and flush overlap the next group's.
COMMITS_IN_FLIGHT = {"sqlite": 1}
DEFAULT_COMMITS_IN_FLIGHT = 3
IDEMPOTENCY_PREFIX = "idempotency:"  # the dedup keys of idempotent requests, apart from inbound message ids


@dataclass(frozen=True)
class Accepted:
    """The intake's answer to an event: its id, and how many deliveries were queued for it."""

    id: str
    event: str
    timestamp: str
    deliveries: int
    duplicate_of: str | None = None  # a repeat (same idempotency key or message id): the event already stored

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "event": self.event,
            "timestamp": self.timestamp,
            "deliveries": self.deliveries,
        }
        if self.duplicate_of:
            body["duplicate"] = True
            body["duplicateOf"] = self.duplicate_of
        return body


class IdempotencyConflict(ValueError):
    """An idempotency key already used for a different request: what differs, by field."""

    def __init__(self, key: str, original: StoredEvent, fields: list[str]) -> None:
        super().__init__(
            f"the idempotency key {key!r} was used for event {original.id} with a different {', '.join(fields)}; "
            "send a new key for a new event"
        )
        self.key = key
        self.original = original
        self.fields = fields


class IntakeStopped(RuntimeError):
    """The committer has stopped (shutdown): nothing more can be made durable here."""


@dataclass(frozen=True)
class _Request:
    """What an idempotent repeat must match: the key, and the fields the sender chose."""

    key: str
    timestamp: str | None  # as sent; None when the daemon stamped the event
    event_id: str | None  # as sent; None when the daemon named the event


@dataclass
class _Pending:
    event: NewEvent
    deliveries: list[NewDelivery]
    done: asyncio.Future[Accepted]
    request: _Request | None = None  # set for an idempotent request: a repeat is compared to it


class Handoff(Protocol):
    """The local delivery engine, taking deliveries as they are committed (no claim query)."""

    def lease(self, integration_id: str, now: float) -> tuple[str, float] | None:
        """(owner, lease expiry) when the engine takes this integration's new deliveries now."""
        ...

    def adopt(self, deliveries: list[DueDelivery]) -> None: ...


class Intake:
    """Every event's way in: checked against the catalog, routed, and committed with its
    deliveries before `emit` returns, concurrent events sharing one commit. `run(stop)` is
    the committer's task; deliveries due now are handed to the local engine (`handoff`)."""

    def __init__(
        self,
        store: AsyncStore | Store,
        reconciler: SnapshotSource,
        on_commit: Callable[[], None] | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.store = AsyncStore.of(store)
        self.reconciler = reconciler
        self.on_commit = on_commit
        self.handoff = handoff
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._router: Router | None = None
        self._router_applied: object = None
        self._checker: EventChecker | None = None
        self._checker_catalog: object = None
        self.committed = 0
        self.deliveries_queued = 0
        self.stopped = False
        self._outage = Outage("intake")
        self._unavailable: StoreUnavailable | None = None  # the last commit's failure, while backing off
        self._refusing_until = 0.0  # monotonic; before it, commits are refused without an attempt

    # --- the public entry --------------------------------------------------------------------

    async def emit(
        self,
        event: Any,
        data: Any,
        *,
        timestamp: Any = None,
        source: str = "python",
        dedup_key: str | None = None,
        idempotency_key: str | None = None,
        event_id: str | None = None,
    ) -> Accepted:
        """Check, route and durably store one event; raise EventRejected with every reason.

        With an `idempotency_key` (or a sender's own `event_id`, which then serves as the key),
        a repeat of the same request is answered with the event first stored (`duplicate_of`)
        and creates nothing; the same key with a different event, data, timestamp or id raises
        IdempotencyConflict. Keys live as long as their event is retained."""
        snapshot = self.reconciler.snapshot  # one state for the whole check and route
        data_json = serialize_data(data) if isinstance(data, dict) else None
        reasons = self.checker(snapshot).check(event, data, timestamp, data_json=data_json)
        if reasons:
            raise EventRejected(reasons)
        assert data_json is not None
        envelope = {
            "id": event_id or new_id("evt"),
            "event": event,
            "timestamp": timestamp or now_timestamp(),
            "data": data,
        }
        request = None
        key = idempotency_key or event_id
        if key is not None:
            request = _Request(key, timestamp, event_id)
            dedup_key = IDEMPOTENCY_PREFIX + key
        now = time.time()
        deliveries = [
            NewDelivery(
                new_id("dlv"),
                envelope["id"],
                match.integration_id,
                match.subscription,
                _first_attempt_at(snapshot, match.integration_id, now),
            )
            for match in self.router(snapshot).route(envelope)
        ]
        if self.stopped:
            raise IntakeStopped("the daemon is shutting down; send the event again shortly")
        stored = NewEvent(envelope["id"], event, envelope["timestamp"], data, source, dedup_key, data_json)
        done: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(stored, deliveries, done, request))
        return await done

    def checker(self, snapshot: Snapshot | None = None) -> EventChecker:
        """The event checker of the snapshot's catalog (built again only when the catalog changes)."""
        catalog = (snapshot or self.reconciler.snapshot).catalog
        if self._checker is None or self._checker_catalog is not catalog:
            self._checker = EventChecker(catalog)
            self._checker_catalog = catalog
        return self._checker

    def router(self, snapshot: Snapshot | None = None) -> Router:
        """The router of the snapshot's applied integrations (built again only when they change)."""
        applied = (snapshot or self.reconciler.snapshot).applied
        if self._router is None or self._router_applied is not applied:
            self._router = Router(applied)
            self._router_applied = applied
        return self._router

    # --- handing deliveries to the local engine -----------------------------------------------------

    def _leased(self, deliveries: list[NewDelivery]) -> list[NewDelivery]:
        """Deliveries due now go to the local engine with a lease written in the same commit:
        they reach their lanes at once, without a claim query per event. Should this process
        crash, the lease expires and any replica takes them over, as with a claim."""
        if self.handoff is None:
            return deliveries
        now = time.time()
        leased = []
        for delivery in deliveries:
            lease = self.handoff.lease(delivery.integration_id, now) if delivery.next_attempt_at <= now else None
            leased.append(
                dataclasses.replace(delivery, lease_owner=lease[0], lease_expires_at=lease[1]) if lease else delivery
            )
        return leased

    def _hand_over(
        self, group: list[_Pending], deliveries: list[NewDelivery], duplicates: dict[str, StoredEvent]
    ) -> None:
        if self.handoff is None:
            return
        events = {p.event.id: p.event for p in group if p.event.id not in duplicates}
        now = time.time()
        due = [
            DueDelivery(
                d.id,
                d.event_id,
                d.integration_id,
                d.subscription,
                0,
                None,
                now,
                {"id": e.id, "event": e.event, "timestamp": e.timestamp, "data": e.data},
                envelope_json(e.id, e.event, e.timestamp, e.data_json) if e.data_json is not None else None,
            )
            for d in deliveries
            if d.lease_owner is not None and (e := events.get(d.event_id)) is not None
        ]
        if due:
            self.handoff.adopt(due)

    # --- the committer --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write queued events in groups until `stop`, then drain what is already queued."""
        slots = asyncio.Semaphore(COMMITS_IN_FLIGHT.get(self.store.dialect, DEFAULT_COMMITS_IN_FLIGHT))
        in_flight: set[asyncio.Task[None]] = set()

        async def commit(group: list[_Pending]) -> None:
            try:
                await self._commit(group)
            finally:
                slots.release()

        try:
            while True:
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    stopper.cancel()
                    if self._queue.empty():
                        return
                    continue  # stop was set: drain the rest below
                stopper.cancel()
                first = getter.result()
                await slots.acquire()  # meanwhile more arrive: the group grows while a slot is busy
                group = [first]
                while len(group) < MAX_GROUP and not self._queue.empty():
                    group.append(self._queue.get_nowait())
                task = asyncio.create_task(commit(group))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            self.stopped = True

    async def _commit(self, group: list[_Pending]) -> None:
        """Store a group; a second request for a key (or event id) already in the group waits
        for the next commit, where it finds the first one stored and is answered as its repeat."""
        while group:
            firsts, group = _split_repeats(group)
            await self._commit_group(firsts)

    async def _commit_group(self, group: list[_Pending]) -> None:
        backing_off = self._refusing_until - time.monotonic()
        if self._unavailable is not None and backing_off > 0:
            last = self._unavailable
            _fail(group, StoreUnavailable(last.store, last.reason, retry_after=backing_off))
            return
        deliveries = self._leased([d for p in group for d in p.deliveries])
        try:
            duplicates = await self.store.enqueue([p.event for p in group], deliveries)
        except StoreUnavailable as exc:  # nothing is acknowledged that is not stored
            delay = self._outage.failed(exc)
            self._unavailable, self._refusing_until = exc, time.monotonic() + delay
            _fail(group, StoreUnavailable(exc.store, exc.reason, retry_after=delay))
            return
        except Exception as exc:  # a bug: nothing is acknowledged that is not stored
            log.exception("could not store events")
            _fail(group, exc)
            return
        self._outage.recovered()
        self._unavailable = None
        self.committed += len(group) - len(duplicates)
        self.deliveries_queued += sum(len(p.deliveries) for p in group if p.event.id not in duplicates)
        for pending in group:
            if pending.done.done():
                continue  # the caller went away; the event is stored all the same
            original = duplicates.get(pending.event.id)
            if original is None:
                accepted = Accepted(
                    pending.event.id, pending.event.event, pending.event.timestamp, len(pending.deliveries)
                )
                pending.done.set_result(accepted)
                continue
            differs = _differences(pending, original)
            if differs:
                assert pending.request is not None
                pending.done.set_exception(IdempotencyConflict(pending.request.key, original, differs))
                continue
            # the answer the first request got: its event, as it was stored
            pending.done.set_result(
                Accepted(original.id, original.event, original.timestamp, original.deliveries, original.id)
            )
        self._hand_over(group, deliveries, duplicates)
        if self.on_commit is not None and any(d.lease_owner is None for d in deliveries):
            self.on_commit()  # some were not handed over: the engine claims them


def _split_repeats(group: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """The group without a second use of any dedup key or event id, and those second uses."""
    seen: set[str] = set()
    firsts, repeats = [], []
    for pending in group:
        names = {pending.event.id, *([pending.event.dedup_key] if pending.event.dedup_key else [])}
        if names & seen:
            repeats.append(pending)
        else:
            seen.update(names)
            firsts.append(pending)
    return firsts, repeats


def _differences(pending: _Pending, original: StoredEvent) -> list[str]:
    """The fields in which an idempotent repeat differs from the event stored under its key
    (none for other repeats: an inbound message id says the same message, whatever its body)."""
    request = pending.request
    if request is None:
        return []
    differs = []
    if request.event_id is not None and request.event_id != original.id:
        differs.append("id")
    if pending.event.event != original.event:
        differs.append("event")
    if pending.event.data != original.data:
        differs.append("data")
    if request.timestamp is not None and request.timestamp != original.timestamp:
        differs.append("timestamp")
    return differs


def _fail(group: list[_Pending], error: Exception) -> None:
    """Every emit of the group raises `error` (a caller that went away is not told)."""
    for pending in group:
        if not pending.done.done():
            pending.done.set_exception(error)


def _first_attempt_at(snapshot: Snapshot, integration_id: str, now: float) -> float:
    """Now, or for `syncFrequency: N` the next multiple of N seconds: an integration's
    pending events become due together and go out as batches."""
    applied = snapshot.applied.get(integration_id)
    every = applied.spec.syncFrequency if applied is not None else 0
    return now if every <= 0 else math.ceil(now / every) * every
