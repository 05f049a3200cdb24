"""The reconcile loop: the one owner of runtime state.

Level-triggered passes converge the registry on the files; file events only make passes come
early, and a periodic full pass heals anything missed. A pass is computed off the event loop
(`converge.compute_pass`), stored, and then published as a new `Snapshot` with one
assignment on the loop. Runtime suspend/resume and removals go through the same door
(`_publish`), under the same lock as passes: nothing else writes what the loop's readers read.

A pass that cannot store its result (the store is unavailable) publishes nothing, and is made
again after a backoff rather than at the next periodic pass: the files are the truth, and a
pass that stores nothing changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconciler.logs import count
from reconciler.manifests.secrets import SecretScope
from reconciler.manifests.validate import TreeValidator, paused_gc
from reconciler.reconcile.converge import Inputs, PassPlan, compute_pass
from reconciler.reconcile.desired import git_commit
from reconciler.reconcile.follow import (
    CATALOG_KEY,
    FOLLOW_SECONDS,
    LAST_PASS_KEY,
    Shared,
    applied_of,
    moved,
    read_shared,
    stored_event_types,
)
from reconciler.reconcile.source import GitSource
from reconciler.registry import AppliedIntegration, PassResult, Snapshot, frozen
from reconciler.store import AsyncStore, AuditEntry, IntegrationRecord, Outage, Override, Store, StoreUnavailable

log = logging.getLogger("reconciler.reconcile")

RESYNC_SECONDS = 60.0  # the periodic full pass, in case a file event was missed
LEADER_CHECK_SECONDS = 2.0  # how often a replica that may reconcile asks whether it leads now

RemovalHook = Callable[[str], Awaitable[None]]


class Reconciler:
    """Converges the registry on the declared files and owns the runtime `snapshot`.

    Readers (intake, routing, delivery, the API) take `reconciler.snapshot` once per
    operation and never change it; `trigger()` asks for a pass, `suspend`/`resume` are the
    runtime overrides. Call `restore()` before serving: it loads what was applied before a
    restart, so events arriving before the first pass still reach their integrations."""

    def __init__(
        self,
        store: AsyncStore | Store,
        config_dir: Path,
        *,
        environ: Mapping[str, str] | None = None,
        resync_seconds: float = RESYNC_SECONDS,
        on_remove: RemovalHook | None = None,
        secret_scope: SecretScope | None = None,
        source: GitSource | None = None,
        controller: bool = True,
    ) -> None:
        self.store = AsyncStore.of(store)
        # may this replica reconcile? (`run --role all|controller`); it does while it leads:
        # one replica of a store at a time (PostgreSQL elects it; an SQLite store has one process)
        self.controller = controller
        self.leading = False
        # a git source: passes read the tree it checked out, at its commit, not `config_dir`
        self.source = source
        if source is not None:
            config_dir = source.config_dir
        # where secret references may read from: by default a secrets/ directory beside the
        # config directory and /run/secrets, never the daemon's own settings
        self.secret_scope = secret_scope or SecretScope.beside(config_dir)
        self.config_dir = config_dir
        self.environ = environ
        self.resync_seconds = resync_seconds
        self.on_remove = on_remove
        self.validator = TreeValidator()
        self.last_pass: PassResult | None = None
        self.passes = 0  # passes that ran to their end (readiness waits for the first)
        # passes that failed: ended with an error (no config directory) or raised (the store
        # unavailable, a bug). Refused files and missing secrets are the files' state, not failures.
        self.pass_errors = 0
        self.passes_raised = 0
        self._snapshot = Snapshot.empty()
        self._restored = False
        self._in_git = False
        self._last_inputs: dict[str, Inputs] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._outage = Outage("reconcile")
        self._election_outage = Outage("election")
        self._seen_versions: dict[str, int] = {}  # the store's change counters as last read back
        self.followed = False  # a pass of the controller was read back: readiness for a replica that follows
        self.config_drift: str | None = None  # set while this replica's files differ from what the controller applied
        # passes are CPU work (parsing, validation): one thread of their own, apart from the
        # store's threads, which intake and delivery need meanwhile
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="reconcile")

    @property
    def snapshot(self) -> Snapshot:
        """The runtime state as last published: take it once per operation."""
        return self._snapshot

    def _publish(self, **changes: Mapping[str, Any] | None) -> None:
        """The one place runtime state changes: on the loop, one assignment. A mapping left out
        (or None) stays the very same object, so readers keep what they derived from it."""
        given = {name: frozen(value) for name, value in changes.items() if value is not None}
        self._snapshot = replace(self._snapshot, version=self._snapshot.version + 1, **given)

    # --- driving ---------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass soon (file events call this; several calls make one pass)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass at start, then on every trigger and at least every `resync_seconds`."""
        trigger = "start"
        try:
            while not stop.is_set():
                self._wake.clear()
                wait = self.resync_seconds
                if not await self._lead():
                    # another replica reconciles: the registry is read back from the store (follow);
                    # ask again soon, and pass at once on taking over
                    await self._compare_config()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), LEADER_CHECK_SECONDS)
                    trigger = "takeover"
                    continue
                try:
                    await self.reconcile_once(trigger)
                except StoreUnavailable as exc:  # the pass again, soon: nothing of it was published
                    self._count_raised()
                    wait = self._outage.failed(exc)
                except Exception:  # a pass must never take the daemon down
                    self._count_raised()
                    log.exception("reconcile pass failed")
                else:
                    self._outage.recovered()
                stopping = asyncio.create_task(stop.wait())
                woken = asyncio.create_task(self._wake.wait())
                done, pending = await asyncio.wait({stopping, woken}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if woken in done:
                    trigger = "watch"
                elif not self._outage.active:
                    trigger = "resync"  # a retried pass keeps the trigger that asked for it
        finally:
            self._worker.shutdown(wait=False)

    def _count_raised(self) -> None:
        self.passes_raised += 1
        self.pass_errors += 1

    async def _lead(self) -> bool:
        """Whether this replica reconciles now: it may (its role) and it leads (the store's
        election). Taking over, it first reads back what the previous controller wrote."""
        leading = False
        if self.controller:
            try:
                leading = await self.store.is_leader()
            except StoreUnavailable as exc:  # cannot reach the database: cannot lead meanwhile
                self._election_outage.failed(exc)
            except Exception:  # a bug here must not stop the loop: it stops leading instead
                log.exception("the controller election failed")
            else:
                self._election_outage.recovered()
        if leading != self.leading:  # the store logs the change of leadership, with its reason
            self.leading = leading
            if leading:
                await self.follow_once()  # what the previous controller wrote, before the first pass
        return leading

    async def _compare_config(self) -> None:
        """A replica that does not lead never acts on its own config directory; when that directory
        is at another commit than the controller applied, it says so (once per pair, and in status)."""
        theirs = self.last_pass.revision if self.followed and self.last_pass is not None else None
        mine = await asyncio.to_thread(git_commit, self.config_dir) if self._in_git else None
        drift = None
        if mine and theirs and mine != theirs:
            drift = (
                f"this replica's config directory {self.config_dir} is at {mine[:12]}, the controller applied "
                f"{theirs[:12]}; this replica follows the registry and does not act on its own files"
            )
        if drift != self.config_drift:
            self.config_drift = drift
            if drift:
                log.warning(drift, extra={"fields": {"commit": mine, "controllerCommit": theirs}})

    async def follow(self, stop: asyncio.Event) -> None:
        """Read back what other replicas write (the controller's passes, anyone's suspensions),
        within FOLLOW_SECONDS, until `stop`."""
        outage = Outage("follow")
        while not stop.is_set():
            wait = FOLLOW_SECONDS
            try:
                await self.follow_once()
            except StoreUnavailable as exc:  # read again, from where it was, once the store is back
                wait = outage.failed(exc)
            except Exception:
                log.exception("reading back the shared state failed")
            else:
                outage.recovered()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def follow_once(self) -> None:
        """Publish what moved in the store since it was last read, other than this process's writes."""
        await self.restore()
        now = await self.store.versions()
        names = moved(self._seen_versions, now, self.store.sync.own_versions)
        if "pass" in names and not self.followed:
            # ready once a pass is read back: the registry is read with it (after it, see
            # read_shared), so it is at least as new as that pass, whatever the counters said
            names.add("registry")
        if not names:
            self._seen_versions = now
            return
        async with self._lock:
            base = self._snapshot
            shared: Shared = await self._off_loop(
                read_shared, self.store.sync, base, names, self.environ, self.secret_scope
            )
            self._publish(
                registry=shared.registry, overrides=shared.overrides, applied=shared.applied, catalog=shared.catalog
            )
            if shared.last_pass is not None and not self.leading:
                self.last_pass = shared.last_pass
                self.followed = True
            self._seen_versions = now
        if "overrides" in names and self.leading:
            self.trigger()  # another replica suspended or resumed: the conditions follow in a pass

    @property
    def ready(self) -> bool:
        """Serving makes sense: a pass of its own ran, or one of the controller's was read back
        (a replica that follows an empty store would acknowledge events with no deliveries)."""
        return self.passes > 0 or self.followed

    async def restore(self) -> None:
        """After a restart, what the registry had applied runs again until the files say otherwise."""
        async with self._lock:
            if self._restored:
                return
            try:
                versions = await self.store.versions()  # before the read: a write meanwhile is read again
                registry, overrides, applied, in_git = await self._off_loop(self._load)
            except Exception as exc:  # read on the reconcile thread, not through AsyncStore: classified here
                unavailable = StoreUnavailable.of(exc, self.store.sync.url)
                if unavailable is None or unavailable is exc:
                    raise
                raise unavailable from exc
            self._in_git = in_git
            self._publish(registry=registry, overrides=overrides, applied=applied)
            self._seen_versions = {**versions, "pass": -1}  # the last pass is read back on the first follow
            self._restored = True

    async def reconcile_once(self, trigger: str = "manual") -> PassResult:
        await self.restore()
        async with self._lock:
            with _collector_held(self.passes == 0):
                return await self._pass(trigger)

    async def _pass(self, trigger: str) -> PassResult:
        """One pass, under the lock: computed off the loop, stored, then published."""
        base = self._snapshot
        # the tree of one commit for the whole pass, even if the source switches meanwhile
        checkout = self.source.hold() if self.source is not None else None
        try:
            plan: PassPlan = await self._off_loop(
                compute_pass,
                self.validator,
                checkout.directory if checkout is not None else self.config_dir,
                base,
                self._last_inputs,
                trigger,
                environ=self.environ,
                in_git=self._in_git,  # False whenever a source gives the commit
                scope=self.secret_scope,
                store_url=self.store.sync.url,
                commit=checkout.commit if checkout is not None else None,
            )
        finally:
            if checkout is not None and self.source is not None:
                self.source.release(checkout)
        assert self._snapshot is base, "only a holder of the lock publishes"
        await self._store_plan(plan)
        self._last_inputs = plan.inputs
        self._publish(registry=plan.registry, applied=plan.applied, overrides=plan.overrides, catalog=plan.catalog)
        result = plan.result
        for integration_id in plan.removals:
            await self._remove(integration_id, result)
        self.last_pass = result
        self.passes += 1
        self.pass_errors += 0 if result.ok else 1
        await self.store.set_meta(LAST_PASS_KEY, result.as_dict(), changes="pass")
        _log_pass(result)
        return result

    async def _store_plan(self, plan: PassPlan) -> None:
        """Durable before visible: the registry rows and the audit trail, then the publish."""
        for entry in plan.lifted:
            assert entry.integration_id is not None
            await self.store.clear_override(entry.integration_id, entry)
        if plan.changed or plan.audit:
            await self.store.call(_save_without_gc, self.store.sync, plan.changed, plan.audit)
        if plan.catalog is not None:  # the other replicas validate events against the same types
            await self.store.set_meta(CATALOG_KEY, stored_event_types(plan.catalog), changes="registry")

    def _off_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._worker, lambda: fn(*args, **kwargs))

    # --- runtime overrides -------------------------------------------------------------------

    async def suspend(self, integration_id: str, actor: str, reason: str) -> IntegrationRecord:
        return await self._override(integration_id, True, actor, reason)

    async def resume(self, integration_id: str, actor: str, reason: str) -> IntegrationRecord:
        return await self._override(integration_id, False, actor, reason)

    async def _override(self, integration_id: str, suspend: bool, actor: str, reason: str) -> IntegrationRecord:
        await self.restore()
        async with self._lock:
            snapshot = self._snapshot
            record = snapshot.registry.get(integration_id)
            if record is None:
                raise KeyError(integration_id)
            entry = AuditEntry(
                "suspend" if suspend else "resume",
                reason or ("suspended" if suspend else "resumed"),
                integration_id,
                actor,
                record.generation,
                record.last_applied_revision,
            )
            overrides = dict(snapshot.overrides)
            if suspend:
                override = Override(integration_id, True, reason, actor, time.time())
                await self.store.set_override(override, entry)
                overrides[integration_id] = override
            else:
                await self.store.clear_override(integration_id, entry)
                overrides.pop(integration_id, None)
            # in force at once for delivery and inbound; the pass below re-derives the conditions
            running = snapshot.applied.get(integration_id)
            applied = None
            if running is not None and running.suspended != suspend:
                applied = {**snapshot.applied, integration_id: replace(running, suspended=suspend)}
            self._publish(overrides=overrides, applied=applied)
        # The override is one of the integration's inputs: a pass re-derives its whole status
        # (a resumed integration is Ready only if it really is). On a replica that does not
        # lead, the controller reads the override back and makes that pass.
        if await self._lead():
            await self.reconcile_once("override")
        return self._snapshot.registry.get(integration_id, record)

    # --- removal -------------------------------------------------------------------------------

    async def _remove(self, integration_id: str, result: PassResult) -> None:
        """Let in-flight deliveries finish, then drop the registry row; queued deliveries stay."""
        running = self._snapshot.applied.get(integration_id)
        if running is not None:  # no new work starts for it from here on
            self._publish(applied={**self._snapshot.applied, integration_id: replace(running, removing=True)})
        if self.on_remove is not None:
            await self.on_remove(integration_id)
        record = self._snapshot.registry.get(integration_id)
        queued = await self.store.delivery_counts(integration_id)
        waiting = sum(count for status, count in queued.items() if status != "delivered")
        message = f"removed: {record.source_file if record else 'its file'} no longer declares it"
        if waiting:
            message += f"; {waiting} undelivered deliveries kept (they resume if it comes back)"
        entry = AuditEntry(
            "remove",
            message,
            integration_id,
            "reconciler",
            record.generation if record else None,
            record.last_applied_revision if record else None,
        )
        if integration_id in self._snapshot.overrides:  # a later integration with this id starts clean
            lifted = AuditEntry("resume", "override lifted: the integration was removed", integration_id, "reconciler")
            await self.store.clear_override(integration_id, lifted)
        await self.store.delete_integration(integration_id, [entry])
        snapshot = self._snapshot
        self._publish(
            registry=_without(snapshot.registry, integration_id),
            applied=_without(snapshot.applied, integration_id) if integration_id in snapshot.applied else None,
            overrides=_without(snapshot.overrides, integration_id) if integration_id in snapshot.overrides else None,
        )
        result.removed.append(integration_id)

    # --- start ---------------------------------------------------------------------------------

    def _load(
        self,
    ) -> tuple[dict[str, IntegrationRecord], dict[str, Override], dict[str, AppliedIntegration], bool]:
        """Off the loop: the stored registry and overrides, and the last good versions rebuilt."""
        store = self.store.sync
        registry = {r.id: r for r in store.list_integrations()}
        overrides = store.overrides()
        applied: dict[str, AppliedIntegration] = {}
        for record in registry.values():
            suspended = bool(overrides.get(record.id) and overrides[record.id].suspended)
            built = applied_of(record, suspended, self.environ, self.secret_scope)
            if built is not None:
                applied[record.id] = built
        in_git = self.source is None and self.config_dir.is_dir() and git_commit(self.config_dir) is not None
        return registry, overrides, applied, in_git


@contextlib.contextmanager
def _collector_held(first: bool) -> Iterator[None]:
    """The first pass builds thousands of long-lived objects (documents, specs, records). It runs
    with the cyclic collector off, and what it built is then frozen out of the collector's reach:
    no collection rescans that heap, during the pass or at any later one. A collection before the
    freeze would cost a third of a second for the little cyclic garbage a pass leaves."""
    if not first or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _save_without_gc(store: Store, records: list[IntegrationRecord], audit: list[AuditEntry]) -> None:
    """A first pass saves thousands of rows while the heap holds every document it parsed: with
    the collector running, its full collections rescan that heap again and again."""
    with paused_gc():
        store.save(records, audit)


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _log_pass(result: PassResult) -> None:
    level = logging.WARNING if result.error or result.refused or result.waiting else logging.INFO
    parts = [count(result.integrations, "integration")]
    for label, ids in (
        ("added", result.added),
        ("changed", result.changed),
        ("removed", result.removed),
        ("refused", result.refused),
        ("waiting for secrets", result.waiting),
    ):
        if ids:
            parts.append(f"{len(ids)} {label}")
    if result.error:
        parts.append(result.error)
    if result.waiting:  # every missing secret of each, so one restart after setting them is enough
        parts.append("waiting: " + "; ".join(f"{i} ({result.why.get(i, '')})" for i in result.waiting))
    if result.dirty_files:
        parts.append(f"{len(result.dirty_files)} files with uncommitted changes")
    fields = {k: v for k, v in result.as_dict().items() if v and k not in ("started_at",)}
    log.log(level, "reconcile pass: " + ", ".join(parts), extra={"fields": fields})
