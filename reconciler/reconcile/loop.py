"""The reconcile loop: level-triggered passes that converge the registry on the files.

A pass validates the whole tree (re-parsing only changed files), then, integration by
integration: refuses a version that does not validate or whose secrets do not resolve
(keeping the last good one running), applies a new or changed one (new generation, audit
entry), leaves an unchanged one alone, and removes one whose file is gone. File events only
make passes come early; a periodic full pass heals anything missed.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, EventType
from reconciler.reconcile.conditions import ConditionType, Reason, Status, condition, same_state, set_condition
from reconciler.reconcile.desired import (
    DesiredIntegration,
    Resolved,
    canonical_spec,
    desired_state,
    git_commit,
    resolve_secrets,
    secrets_fingerprint,
    spec_hash,
)
from reconciler.reconcile.diff import diff_specs
from reconciler.spec.checks import event_catalog
from reconciler.spec.diagnostics import Diagnostic
from reconciler.spec.models import INTEGRATION_MODELS, AnyIntegration
from reconciler.spec.validate import TreeValidator, paused_gc
from reconciler.store import AuditEntry, IntegrationRecord, Override, Store

log = logging.getLogger("reconciler.reconcile")

RESYNC_SECONDS = 60.0  # the periodic full pass, in case a file event was missed
MAX_MESSAGE_PROBLEMS = 3  # problems quoted in a condition message; the rest are counted


@dataclass
class AppliedIntegration:
    """What the delivery side runs: the applied spec and its resolved secrets (memory only)."""

    id: str
    generation: int
    spec: AnyIntegration
    resolved: Resolved | None
    suspended: bool = False
    removing: bool = False  # its file is gone; in-flight deliveries are finishing

    @property
    def delivering(self) -> bool:
        return self.spec.active and not self.suspended and not self.removing and self.resolved is not None


@dataclass
class PassResult:
    trigger: str
    started_at: float
    duration_ms: float
    revision: str | None
    integrations: int
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a version that does not validate
    waiting: list[str] = field(default_factory=list)  # a valid version whose secrets do not resolve
    files_refused: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused and not self.waiting and not self.files_refused

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


RemovalHook = Callable[[str], Awaitable[None]]


class Reconciler:
    def __init__(
        self,
        store: Store,
        config_dir: Path,
        *,
        environ: Mapping[str, str] | None = None,
        resync_seconds: float = RESYNC_SECONDS,
        on_remove: RemovalHook | None = None,
    ) -> None:
        self.store = store
        self.config_dir = config_dir
        self.environ = environ
        self.resync_seconds = resync_seconds
        self.on_remove = on_remove
        self.validator = TreeValidator()
        self.registry: dict[str, IntegrationRecord] = {r.id: r for r in store.list_integrations()}
        self.overrides: dict[str, Override] = store.overrides()
        self.applied: dict[str, AppliedIntegration] = {}
        # bumped whenever `applied` changes, so routing and delivery rebuild what they derive
        self.applied_version = 0
        self.catalog: dict[str, EventType] = dict(BUILTIN_EVENT_TYPES)
        self.last_pass: PassResult | None = None
        self.passes = 0
        self.pass_errors = 0  # passes that failed outright or refused something
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._in_git = git_commit(config_dir) is not None if config_dir.is_dir() else False
        self._last_inputs: dict[str, tuple[Any, ...]] = {}
        self._restore_last_known_good()

    # --- driving ---------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass soon (file events call this; several calls make one pass)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass at start, then on every trigger and at least every `resync_seconds`."""
        trigger = "start"
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.reconcile_once(trigger)
            except Exception:  # a pass must never take the daemon down
                log.exception("reconcile pass failed")
            stopping = asyncio.create_task(stop.wait())
            woken = asyncio.create_task(self._wake.wait())
            done, pending = await asyncio.wait(
                {stopping, woken}, timeout=self.resync_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            trigger = "watch" if woken in done else "resync"

    async def reconcile_once(self, trigger: str = "manual") -> PassResult:
        async with self._lock:
            result, removals = await asyncio.to_thread(self._pass_without_gc, trigger)
            for integration_id in removals:
                await self._remove(integration_id, result)
            self.last_pass = result
            self.passes += 1
            self.pass_errors += 0 if result.ok else 1
            if self.passes == 1:
                # The first pass builds thousands of long-lived objects (documents, specs, records);
                # moving them out of the collector's reach keeps later passes free of long GC pauses.
                gc.collect()
                gc.freeze()
            await asyncio.to_thread(self.store.set_meta, "last_pass", result.as_dict())
            _log_pass(result)
            return result

    # --- runtime overrides -------------------------------------------------------------------

    async def suspend(self, integration_id: str, actor: str, reason: str) -> IntegrationRecord:
        return await self._override(integration_id, True, actor, reason)

    async def resume(self, integration_id: str, actor: str, reason: str) -> IntegrationRecord:
        return await self._override(integration_id, False, actor, reason)

    async def _override(self, integration_id: str, suspend: bool, actor: str, reason: str) -> IntegrationRecord:
        async with self._lock:
            record = self.registry.get(integration_id)
            if record is None:
                raise KeyError(integration_id)
            action = "suspend" if suspend else "resume"
            entry = AuditEntry(
                action,
                reason or ("suspended" if suspend else "resumed"),
                integration_id,
                actor,
                record.generation,
                record.last_applied_revision,
            )
            if suspend:
                override = Override(integration_id, True, reason, actor, time.time())
                await asyncio.to_thread(self.store.set_override, override, entry)
                self.overrides[integration_id] = override
            else:
                await asyncio.to_thread(self.store.clear_override, integration_id, entry)
                self.overrides.pop(integration_id, None)
        # The override is one of the integration's inputs: a pass re-derives its whole status
        # (a resumed integration is Ready only if it really is).
        await self.reconcile_once("override")
        return self.registry.get(integration_id, record)

    # --- one pass (in a worker thread) ------------------------------------------------------

    def _pass_without_gc(self, trigger: str) -> tuple[PassResult, list[str]]:
        with paused_gc():
            return self._pass(trigger)

    def _pass(self, trigger: str) -> tuple[PassResult, list[str]]:
        started = time.time()
        clock = time.perf_counter()
        commit = git_commit(self.config_dir) if self._in_git else None
        if not self.config_dir.is_dir():
            # A missing directory is a mount or checkout problem, not "delete everything".
            result = PassResult(
                trigger,
                started,
                0.0,
                commit,
                len(self.registry),
                error=f"config directory {self.config_dir} does not exist; nothing changed",
            )
            return result, []
        # File events name what changed, so their passes trust file stats; the periodic pass and
        # the first one read every file, healing anything a stat could hide.
        trust_stat = trigger == "watch"
        validation = self.validator.validate_paths(
            [self.config_dir], root=self.config_dir, environ=self.environ, trust_stat=trust_stat
        )
        desired = desired_state(validation)
        result = PassResult(trigger, started, 0.0, commit, len(desired.integrations))
        result.files_refused = sorted({d.file for d in validation.diagnostics})
        registry: dict[str, IntegrationRecord] = {}
        touched: list[IntegrationRecord] = []
        audit: list[AuditEntry] = []
        inputs: dict[str, tuple[Any, ...]] = {}
        for integration_id, claimants in desired.integrations.items():
            old = self.registry.get(integration_id)
            claimant = _pick(claimants, old) if old else claimants[0]
            inputs[integration_id] = self._inputs(claimants, claimant)
            if old is not None and self._last_inputs.get(integration_id) == inputs[integration_id]:
                registry[integration_id] = old  # nothing it depends on changed: skip
                _note_unchanged(old, result)
                continue
            record = copy.copy(old) if old else IntegrationRecord(id=integration_id)
            revision = {"commit": commit, "contentHash": claimant.content_hash, "file": claimant.source_file}
            self._converge(record, claimant, revision, audit, result)
            self._apply_override(record)
            registry[integration_id] = record
            touched.append(record)
        removals = []
        problems_by_file: dict[str, list[Diagnostic]] = {}
        for diagnostic in validation.diagnostics:
            problems_by_file.setdefault(diagnostic.file, []).append(diagnostic)
        for integration_id, old in self.registry.items():
            if integration_id in registry:
                continue
            record = copy.copy(old)
            if record.source_file in validation.hashes and record.source_file in problems_by_file:
                # Its file is still there but has problems (unreadable, a typo in `kind`): an
                # integration is removed only by a file that is gone or that validates without it.
                problems = problems_by_file[record.source_file]
                previous_attempt = record.last_attempted_revision
                record.last_attempted_revision = {
                    "commit": commit,
                    "contentHash": validation.hashes.get(record.source_file, ""),
                    "file": record.source_file,
                }
                self._refuse(record, Reason.VALIDATION_FAILED, _summarize(problems), audit, previous_attempt, result)
            else:
                record.conditions = set_condition(
                    record.conditions,
                    ConditionType.READY,
                    Status.FALSE,
                    Reason.REMOVING,
                    f"{record.source_file} no longer declares it; finishing in-flight deliveries",
                    record.generation,
                )
                removals.append(integration_id)
            self._apply_override(record)
            registry[integration_id] = record
            touched.append(record)
        changed = [r for r in touched if _differs(self.registry.get(r.id), r)]
        if changed or audit:
            self.store.save(changed, audit)
        self.registry = registry
        self._last_inputs = inputs
        catalog = event_catalog(validation)
        if _catalog_key(catalog) != _catalog_key(self.catalog):
            self.catalog = catalog  # only on change: intake keeps its compiled validators otherwise
        result.duration_ms = round((time.perf_counter() - clock) * 1000, 2)
        return result, removals

    def _inputs(self, claimants: list[DesiredIntegration], claimant: DesiredIntegration) -> tuple[Any, ...]:
        """Everything a converge step reads. Equal inputs give an equal outcome, so a pass skips
        integrations whose inputs are unchanged: a pass over 1,000 files costs what the changed ones cost.

        The git commit is not an input: an integration's revisions name the commit at which its
        content last changed, so a commit that leaves a file alone rewrites nothing."""
        secrets_state = secrets_fingerprint(claimant.spec, self.environ) if claimant.spec is not None else None
        override = self.overrides.get(claimant.id)
        return (
            tuple((c.source_file, c.source_document, c.content_hash) for c in claimants),
            tuple(p.as_text() for p in claimant.problems),
            secrets_state,
            (override.suspended, override.actor, override.reason) if override else None,
        )

    def _converge(
        self,
        record: IntegrationRecord,
        claimant: DesiredIntegration,
        revision: dict[str, Any],
        audit: list[AuditEntry],
        result: PassResult,
    ) -> None:
        previous_attempt = record.last_attempted_revision
        record.last_attempted_revision = revision
        if not record.applied:
            # where it is declared, even while refused: a broken edit of that file must not remove it
            record.source_file, record.source_document = claimant.source_file, claimant.source_document
        if not claimant.valid or claimant.spec is None:
            self._refuse(
                record, Reason.VALIDATION_FAILED, _summarize(claimant.problems), audit, previous_attempt, result
            )
            return
        spec = claimant.spec
        resolved, why = resolve_secrets(spec, self.environ)
        if resolved is None:
            self._refuse(record, Reason.SECRET_MISSING, why, audit, previous_attempt, result)
            return
        canonical = canonical_spec(spec)
        digest = spec_hash(canonical)
        if digest != record.spec_hash or not record.applied:
            action = "change" if record.applied else "add"
            changes = diff_specs(record.spec or {}, canonical) if record.applied else []
            record.generation += 1
            record.spec, record.spec_hash = canonical, digest
            record.type, record.name = spec.type, spec.name
            record.applied_at = time.time()
            audit.append(
                AuditEntry(
                    action,
                    _change_message(action, changes, revision),
                    record.id,
                    "reconciler",
                    record.generation,
                    revision,
                    {"fields": [c.pointer for c in changes]} if changes else None,
                )
            )
            (result.changed if action == "change" else result.added).append(record.id)
        record.source_file, record.source_document = claimant.source_file, claimant.source_document
        record.last_applied_revision = revision
        runtime = self.applied.get(record.id)
        if runtime is None or runtime.generation != record.generation or runtime.resolved != resolved:
            self.applied[record.id] = AppliedIntegration(record.id, record.generation, spec, resolved)
            self.applied_version += 1
        ready = (
            (Status.TRUE, Reason.APPLIED, f"generation {record.generation} applied")
            if spec.active
            else (Status.FALSE, Reason.INACTIVE, "declared with active: false")
        )
        record.conditions = set_condition(record.conditions, ConditionType.READY, *ready, record.generation)
        record.conditions = set_condition(
            record.conditions,
            ConditionType.SYNCED,
            Status.TRUE,
            Reason.UP_TO_DATE,
            f"matches {revision['file']}" + (f" at {revision['commit'][:12]}" if revision["commit"] else ""),
            record.generation,
        )
        if condition(record.conditions, ConditionType.DEGRADED) is None:
            record.conditions = set_condition(
                record.conditions,
                ConditionType.DEGRADED,
                Status.FALSE,
                Reason.HEALTHY,
                "no delivery trouble",
                record.generation,
            )

    def _refuse(
        self,
        record: IntegrationRecord,
        reason: str,
        message: str,
        audit: list[AuditEntry],
        previous_attempt: dict[str, Any] | None,
        result: PassResult,
    ) -> None:
        """Keep the last good version running (if any) and say why the new one was refused."""
        repeated = previous_attempt == record.last_attempted_revision and _was_refused(record, message)
        (result.waiting if reason == Reason.SECRET_MISSING else result.refused).append(record.id)
        running = record.applied and record.id in self.applied
        if running:
            ready = (Status.TRUE, Reason.APPLIED, f"generation {record.generation} (last good version) applied")
        else:
            ready = (Status.FALSE, reason if reason == Reason.SECRET_MISSING else Reason.NEVER_APPLIED, message)
        record.conditions = set_condition(record.conditions, ConditionType.READY, *ready, record.generation)
        record.conditions = set_condition(
            record.conditions, ConditionType.SYNCED, Status.FALSE, reason, message, record.generation
        )
        if not repeated:  # the audit trail records each refusal once, not every pass
            audit.append(
                AuditEntry(
                    "refuse", message, record.id, "reconciler", record.generation, record.last_attempted_revision
                )
            )

    def _apply_override(self, record: IntegrationRecord) -> None:
        """Show a runtime suspension as drift; lift it once git agrees (active: false)."""
        override = self.overrides.get(record.id)
        if override is not None and override.suspended and record.spec is not None and not record.spec.get("active"):
            entry = AuditEntry(
                "resume",
                "override lifted: git now declares active: false",
                record.id,
                "reconciler",
                record.generation,
                record.last_applied_revision,
            )
            self.store.clear_override(record.id, entry)
            self.overrides.pop(record.id, None)
            override = None
        suspended = override is not None and override.suspended
        if suspended:
            assert override is not None
            message = f"suspended by {override.actor}" + (f": {override.reason}" if override.reason else "")
            record.conditions = set_condition(
                record.conditions,
                ConditionType.SUSPENDED,
                Status.TRUE,
                Reason.SUSPENDED_BY_OPERATOR,
                message,
                record.generation,
            )
            ready = condition(record.conditions, ConditionType.READY)
            if ready is None or ready["reason"] != Reason.REMOVING:
                record.conditions = set_condition(
                    record.conditions,
                    ConditionType.READY,
                    Status.FALSE,
                    Reason.SUSPENDED_BY_OPERATOR,
                    message,
                    record.generation,
                )
        else:
            record.conditions = set_condition(
                record.conditions,
                ConditionType.SUSPENDED,
                Status.FALSE,
                Reason.NOT_SUSPENDED,
                "no runtime override",
                record.generation,
            )
        runtime = self.applied.get(record.id)
        if runtime is not None and runtime.suspended != suspended:
            runtime.suspended = suspended
            self.applied_version += 1

    async def _remove(self, integration_id: str, result: PassResult) -> None:
        """Let in-flight deliveries finish, then drop the registry row; queued deliveries stay."""
        runtime = self.applied.get(integration_id)
        if runtime is not None:
            runtime.removing = True  # no new work starts for it from here on
            self.applied_version += 1
        if self.on_remove is not None:
            await self.on_remove(integration_id)
        record = self.registry.get(integration_id)
        queued = await asyncio.to_thread(self.store.delivery_counts, integration_id)
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
        entries = [entry]
        if integration_id in self.overrides:  # a later integration with this id starts clean
            entries.append(
                AuditEntry("resume", "override lifted: the integration was removed", integration_id, "reconciler")
            )
            await asyncio.to_thread(self.store.clear_override, integration_id, entries.pop())
            self.overrides.pop(integration_id, None)
        await asyncio.to_thread(self.store.delete_integration, integration_id, entries)
        self.registry = {k: v for k, v in self.registry.items() if k != integration_id}
        self.applied.pop(integration_id, None)
        self.applied_version += 1
        result.removed.append(integration_id)

    def _restore_last_known_good(self) -> None:
        """After a restart, what the registry had applied runs again until the files say otherwise."""
        for record in self.registry.values():
            if record.spec is None or record.type not in INTEGRATION_MODELS:
                continue
            try:
                spec = INTEGRATION_MODELS[record.type].model_validate(record.spec)
            except ValueError:
                continue  # stored by an older format; the next pass decides
            resolved, _ = resolve_secrets(spec, self.environ)
            suspended = bool(self.overrides.get(record.id) and self.overrides[record.id].suspended)
            self.applied[record.id] = AppliedIntegration(record.id, record.generation, spec, resolved, suspended)


def _catalog_key(catalog: dict[str, EventType]) -> list[tuple[str, Any, Any]]:
    return [(name, event.schema, event.example) for name, event in sorted(catalog.items())]


def _note_unchanged(record: IntegrationRecord, result: PassResult) -> None:
    """An unchanged integration still counts in the pass's refused or waiting lists."""
    synced = condition(record.conditions, ConditionType.SYNCED)
    if synced is not None and synced["status"] == Status.FALSE:
        (result.waiting if synced["reason"] == Reason.SECRET_MISSING else result.refused).append(record.id)


def _pick(claimants: list[DesiredIntegration], record: IntegrationRecord) -> DesiredIntegration:
    """With a duplicate id, report against the file the running version came from."""
    for claimant in claimants:
        if claimant.source_file == record.source_file:
            return claimant
    return claimants[0]


def _summarize(problems: list[Diagnostic]) -> str:
    lines = [f"{p.location()}: {p.message}" for p in problems[:MAX_MESSAGE_PROBLEMS]]
    if len(problems) > MAX_MESSAGE_PROBLEMS:
        lines.append(f"and {len(problems) - MAX_MESSAGE_PROBLEMS} more")
    return "; ".join(lines) or "the file does not validate"


def _was_refused(record: IntegrationRecord, message: str) -> bool:
    synced = condition(record.conditions, ConditionType.SYNCED)
    return synced is not None and synced["message"] == message


def _change_message(action: str, changes: list[Any], revision: dict[str, Any]) -> str:
    where = revision["file"] + (f" at {revision['commit'][:12]}" if revision.get("commit") else "")
    if action == "add":
        return f"added from {where}"
    fields = ", ".join(c.pointer for c in changes[:5]) + (" ..." if len(changes) > 5 else "")
    return f"changed from {where}: {fields}"


def _differs(old: IntegrationRecord | None, new: IntegrationRecord) -> bool:
    if old is None:
        return True
    if not same_state(old.conditions, new.conditions):
        return True
    keys = (
        "generation",
        "spec_hash",
        "source_file",
        "source_document",
        "last_applied_revision",
        "last_attempted_revision",
        "type",
        "name",
    )
    return any(getattr(old, k) != getattr(new, k) for k in keys)


def _log_pass(result: PassResult) -> None:
    level = logging.WARNING if result.error or result.refused or result.waiting else logging.INFO
    parts = [f"{result.integrations} integrations"]
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
    fields = {k: v for k, v in result.as_dict().items() if v and k not in ("started_at",)}
    log.log(level, "reconcile pass: " + ", ".join(parts), extra={"fields": fields})
