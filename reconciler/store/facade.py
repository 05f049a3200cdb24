"""The store as the event loop sees it: every call awaitable, run on the store's own threads.

The daemon's stages (API, intake, delivery, reconcile) reach the store only through
`AsyncStore`, so a call that would block the event loop cannot be written by mistake. The
calls run on a bounded pool of their own, apart from the default executor that health,
metrics and streams share: a burst of slow reads cannot starve the intake's commits of
threads, and the number of database connections in use stays bounded.

Once a store is wrapped, a synchronous call made on the event loop's thread raises
`StoreOnLoop` (checked when a connection is taken from the pool): the promise that the loop
never waits on disk is enforced, not hoped for.

A driver's error that means the store is unavailable (unreachable, failing over, disk full,
locked too long) leaves the store's threads as `StoreUnavailable` (reconciler.store.errors):
the stages back off and retry on that one type, and every other error stays a bug.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

from reconciler.store.base import AuditEntry, IntegrationRecord, Override, Store
from reconciler.store.endpoints import EndpointChange, EndpointRow
from reconciler.store.errors import StoreUnavailable
from reconciler.store.history import LogFilter
from reconciler.store.records import Attempt, DueDelivery, NewDelivery, NewEvent, Outcome, StoredEvent
from reconciler.store.replicas import ReplicaInfo, Takeover

STORE_THREADS = 8  # calls in flight at once; the connection pools allow more, the disk gains nothing
PING_TIMEOUT_SECONDS = 5.0  # a readiness probe that waits longer than this says not ready

P = ParamSpec("P")
T = TypeVar("T")


class StoreOnLoop(RuntimeError):
    """A synchronous store call on the event loop's thread: it would stall every request."""


class AsyncStore:
    """Awaitable store calls on a bounded pool of threads; `sync` is the store itself, for
    code that already runs off the loop (a reconcile pass, a composite read via `call`)."""

    def __init__(self, store: Store, threads: int = STORE_THREADS) -> None:
        self.sync = store
        self.dialect = store.dialect
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store")
        forbid_loop_calls(store)

    @classmethod
    def of(cls, store: AsyncStore | Store) -> AsyncStore:
        """The store's one facade (one pool per store, whoever asks for it)."""
        if isinstance(store, AsyncStore):
            return store
        existing = getattr(store, "_facade", None)
        if existing is None:
            existing = cls(store)
            store._facade = existing  # type: ignore[attr-defined]
        return existing

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """Run `fn` (a store method, or a function of several store calls) on the store's
        threads; an error that means the store is unavailable is raised as StoreUnavailable."""
        return asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(_classified, self.sync.url, fn, *args, **kwargs)
        )

    def describe(self) -> str:
        return self.sync.describe()

    async def ping(self, timeout: float = PING_TIMEOUT_SECONDS) -> None:
        """Raise StoreUnavailable unless the database answers a round trip within `timeout`."""
        try:
            await asyncio.wait_for(self.call(self.sync.ping), timeout)
        except TimeoutError:
            raise StoreUnavailable(self.describe(), f"no answer within {timeout:g} s") from None

    async def close(self) -> None:
        await self.call(self.sync.close)
        self._pool.shutdown(wait=False)

    # --- registry, overrides, audit, meta ---------------------------------------------------------

    async def list_integrations(self) -> list[IntegrationRecord]:
        return await self.call(self.sync.list_integrations)

    async def save(self, records: Sequence[IntegrationRecord], audit: Iterable[AuditEntry] = ()) -> None:
        await self.call(self.sync.save, records, list(audit))

    async def delete_integration(self, integration_id: str, audit: Iterable[AuditEntry] = ()) -> None:
        await self.call(self.sync.delete_integration, integration_id, list(audit))

    async def overrides(self) -> dict[str, Override]:
        return await self.call(self.sync.overrides)

    async def set_override(self, override: Override, audit: AuditEntry) -> None:
        await self.call(self.sync.set_override, override, audit)

    async def clear_override(self, integration_id: str, audit: AuditEntry) -> None:
        await self.call(self.sync.clear_override, integration_id, audit)

    async def audit_trail(self, integration_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return await self.call(self.sync.audit_trail, integration_id, limit)

    async def get_meta(self, key: str, default: Any = None) -> Any:
        return await self.call(self.sync.get_meta, key, default)

    async def set_meta(self, key: str, value: Any, *, changes: str | None = None) -> None:
        await self.call(self.sync.set_meta, key, value, changes=changes)

    async def versions(self) -> dict[str, int]:
        return await self.call(self.sync.versions)

    async def is_leader(self) -> bool:
        return await self.call(self.sync.is_leader)

    # --- the outbox ---------------------------------------------------------------------------------

    async def enqueue(self, events: Sequence[NewEvent], deliveries: Sequence[NewDelivery]) -> dict[str, StoredEvent]:
        return await self.call(self.sync.enqueue, events, deliveries)

    async def claim(
        self, owner: str, integration_ids: Iterable[str], now: float, limit: int, lease_seconds: float
    ) -> list[DueDelivery]:
        return await self.call(self.sync.claim, owner, list(integration_ids), now, limit, lease_seconds)

    async def assign_batch(self, delivery_ids: Sequence[str], batch_id: str, owner: str | None = None) -> None:
        await self.call(self.sync.assign_batch, delivery_ids, batch_id, owner)

    async def record(self, outcomes: Sequence[Outcome], owner: str | None = None) -> int:
        return await self.call(self.sync.record, outcomes, owner)

    async def log_attempts(self, attempts: Sequence[Attempt]) -> None:
        await self.call(self.sync.log_attempts, attempts)

    async def renew_leases(self, owner: str, delivery_ids: Sequence[str], until: float) -> int:
        return await self.call(self.sync.renew_leases, owner, delivery_ids, until)

    async def release_leases(self, owner: str | None = None) -> int:
        return await self.call(self.sync.release_leases, owner)

    async def replay(
        self,
        *,
        delivery_id: str | None = None,
        integration_id: str | None = None,
        since: float | None = None,
        statuses: Sequence[str] = ("failed", "dead"),
    ) -> int:
        return await self.call(
            self.sync.replay, delivery_id=delivery_id, integration_id=integration_id, since=since, statuses=statuses
        )

    async def prune(self, before: float) -> dict[str, int]:
        return await self.call(self.sync.prune, before)

    async def delivery_counts(self, integration_id: str | None = None) -> dict[str, int]:
        return await self.call(self.sync.delivery_counts, integration_id)

    # --- endpoints: breakers and pauses shared by replicas ---------------------------------------------

    async def endpoint_rows(self, now: float) -> list[EndpointRow]:
        return await self.call(self.sync.endpoint_rows, now)

    async def change_endpoint(self, kind: str, key: str, change: EndpointChange) -> tuple[EndpointRow, bool]:
        return await self.call(self.sync.change_endpoint, kind, key, change)

    # --- replicas ------------------------------------------------------------------------------------

    async def register_replica(self, replica: ReplicaInfo) -> None:
        await self.call(self.sync.register_replica, replica)

    async def heartbeat(self, replica_id: str, config_revision: str | None, leader: bool) -> bool:
        return await self.call(self.sync.heartbeat, replica_id, config_revision, leader)

    async def deregister_replica(self, replica_id: str) -> None:
        await self.call(self.sync.deregister_replica, replica_id)

    async def take_over_dead_replicas(self, dead_after: float) -> list[Takeover]:
        return await self.call(self.sync.take_over_dead_replicas, dead_after)

    # --- history: logs and deliveries -----------------------------------------------------------------

    async def log_page(
        self, integration_id: str, where: LogFilter, *, before: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self.call(self.sync.log_page, integration_id, where, before=before, limit=limit)

    async def log_after(self, integration_id: str, where: LogFilter, after: str | None) -> list[dict[str, Any]]:
        return await self.call(self.sync.log_after, integration_id, where, after)

    async def latest_log_cursor(self, integration_id: str, where: LogFilter) -> str | None:
        return await self.call(self.sync.latest_log_cursor, integration_id, where)

    async def delivery_page(
        self, integration_id: str, statuses: Sequence[str], *, before: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self.call(self.sync.delivery_page, integration_id, statuses, before=before, limit=limit)

    async def delivery_integration(self, delivery_id: str) -> str | None:
        return await self.call(self.sync.delivery_integration, delivery_id)


def _classified(url: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)`, with an error that means "unavailable, retry later" raised as
    StoreUnavailable (the driver's error as its cause); a bug is raised as it is."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        unavailable = StoreUnavailable.of(exc, url)
        if unavailable is None or unavailable is exc:
            raise
        raise unavailable from exc


def forbid_loop_calls(store: Store) -> None:
    """From now on, taking one of the store's connections on an event loop's thread raises."""
    if getattr(store, "_loop_guarded", False):
        return
    store._loop_guarded = True  # type: ignore[attr-defined]
    sa.event.listen(store.engine, "checkout", _refuse_on_loop)


def _refuse_on_loop(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # asyncio's C accessor: None on a thread without a running loop (the store's own threads)
    if asyncio._get_running_loop() is not None:
        raise StoreOnLoop(
            "a store call ran on the event loop's thread, where it would stall every request; "
            "await it through AsyncStore (reconciler.store.facade) instead"
        )
