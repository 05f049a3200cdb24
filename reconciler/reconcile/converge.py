"""One reconcile pass, computed off the event loop: from the files and the current snapshot to
the next one.

`compute_pass` validates the whole tree (re-parsing only changed files), then, integration
by integration: refuses a version that does not validate or whose secrets do not resolve
(keeping the last good one running), applies a new or changed one (new generation, audit
entry), leaves an unchanged one alone, and marks one whose file is gone for removal.

It writes nothing and publishes nothing: it reads the snapshot it is given (immutable) and
returns a `PassPlan` (the records to store, the audit entries, the next registry, applied
integrations, overrides and catalog). The loop stores the plan, then publishes it with one
assignment, so no reader ever sees a half-applied pass.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.events.catalog import EventType
from reconciler.manifests.checks import event_catalog
from reconciler.manifests.diagnostics import Diagnostic, Severity
from reconciler.manifests.secrets import ANYWHERE, SecretScope
from reconciler.manifests.validate import TreeValidator, paused_gc
from reconciler.reconcile.conditions import ConditionType, Reason, Status, condition, same_state, set_condition
from reconciler.reconcile.desired import (
    DesiredIntegration,
    GitState,
    canonical_spec,
    desired_state,
    git_state,
    own_store_refusal,
    resolve_secrets,
    secrets_fingerprint,
    spec_hash,
)
from reconciler.reconcile.diff import diff_specs
from reconciler.registry import AppliedIntegration, PassResult, Snapshot
from reconciler.store import AuditEntry, IntegrationRecord, Override

MAX_MESSAGE_PROBLEMS = 3  # problems quoted in a condition message; the rest are counted
MAX_REFUSAL_LINES = 10  # errors of one refused file kept with the pass's result

Inputs = tuple[Any, ...]


@dataclass
class PassPlan:
    """What a pass decided. The loop writes `changed`, `audit` and `lifted` to the store, then
    publishes the rest; `None` means unchanged (readers keep what they derived from it)."""

    result: PassResult
    registry: dict[str, IntegrationRecord]
    applied: dict[str, AppliedIntegration] | None
    overrides: dict[str, Override] | None
    catalog: dict[str, EventType] | None
    inputs: dict[str, Inputs]
    changed: list[IntegrationRecord] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    lifted: list[AuditEntry] = field(default_factory=list)  # overrides made moot by git (active: false)
    removals: list[str] = field(default_factory=list)  # files gone: remove once in-flight work ends


def compute_pass(
    validator: TreeValidator,
    config_dir: Path,
    base: Snapshot,
    last_inputs: Mapping[str, Inputs],
    trigger: str,
    *,
    environ: Mapping[str, str] | None = None,
    in_git: bool = False,
    scope: SecretScope = ANYWHERE,
    store_url: str | None = None,
    commit: str | None = None,
) -> PassPlan:
    """The next state, from the files as they are now and the snapshot `base`; secret
    references are read within `scope`; no integration may write into the store at `store_url`.
    `commit`: the revision the files are at, as a git source checked them out (otherwise the
    HEAD of the work tree holding them, when `in_git`)."""
    with paused_gc():
        computing = _Pass(base, last_inputs, environ, scope)
        computing.store_url = store_url
        return computing.run(validator, config_dir, trigger, in_git, commit)


class _Pass:
    """Working copies of one pass: the snapshot's mappings are never touched."""

    def __init__(
        self,
        base: Snapshot,
        last_inputs: Mapping[str, Inputs],
        environ: Mapping[str, str] | None,
        scope: SecretScope,
    ) -> None:
        self.base = base
        self.scope = scope
        self.last_inputs = last_inputs
        self.environ = environ
        self.applied = dict(base.applied)
        self.applied_changed = False
        self.overrides = dict(base.overrides)
        self.audit: list[AuditEntry] = []
        self.lifted: list[AuditEntry] = []
        self.git: GitState | None = None
        self.store_url: str | None = None  # the daemon's own store

    def run(
        self, validator: TreeValidator, config_dir: Path, trigger: str, in_git: bool, known_commit: str | None
    ) -> PassPlan:
        started = time.time()
        clock = time.perf_counter()
        self.git = git_state(config_dir) if in_git and known_commit is None else None
        commit = known_commit or (self.git.commit if self.git else None)
        if not config_dir.is_dir():
            # A missing directory is a mount or checkout problem, not "delete everything".
            result = PassResult(
                trigger,
                started,
                0.0,
                commit,
                len(self.base.registry),
                error=f"config directory {config_dir} does not exist; nothing changed",
            )
            return PassPlan(result, dict(self.base.registry), None, None, None, dict(self.last_inputs))
        # File events name what changed, so their passes trust file stats; the periodic pass and
        # the first one read every file, healing anything a stat could hide.
        validation = validator.validate_paths(
            [config_dir], root=config_dir, environ=self.environ, trust_stat=trigger == "watch"
        )
        desired = desired_state(validation)
        result = PassResult(trigger, started, 0.0, commit, len(desired.integrations))
        # a warning (a file that validates with advice) refuses nothing
        result.files_refused = sorted({d.file for d in validation.diagnostics if d.severity is Severity.ERROR})
        result.dirty_files = sorted(f for f in validation.hashes if self._dirty(f))
        result.refusals = _refusals(validation.diagnostics)
        registry: dict[str, IntegrationRecord] = {}
        touched: list[IntegrationRecord] = []
        inputs: dict[str, Inputs] = {}
        for integration_id, claimants in desired.integrations.items():
            old = self.base.registry.get(integration_id)
            claimant = _pick(claimants, old) if old else claimants[0]
            inputs[integration_id] = self._inputs(claimants, claimant)
            if old is not None and self.last_inputs.get(integration_id) == inputs[integration_id]:
                registry[integration_id] = old  # nothing it depends on changed: skip
                _note_unchanged(old, result)
                continue
            record = copy.copy(old) if old else IntegrationRecord(id=integration_id)
            revision = self._revision(commit, claimant.content_hash, claimant.source_file)
            self._converge(record, claimant, revision, result)
            self._apply_override(record)
            registry[integration_id] = record
            touched.append(record)
        removals = []
        problems_by_file: dict[str, list[Diagnostic]] = {}
        for diagnostic in validation.diagnostics:
            problems_by_file.setdefault(diagnostic.file, []).append(diagnostic)
        for integration_id, old in self.base.registry.items():
            if integration_id in registry:
                continue
            record = copy.copy(old)
            if record.source_file in validation.hashes and record.source_file in problems_by_file:
                # Its file is still there but has problems (unreadable, a typo in `kind`): an
                # integration is removed only by a file that is gone or that validates without it.
                previous_attempt = record.last_attempted_revision
                record.last_attempted_revision = self._revision(
                    commit, validation.hashes.get(record.source_file, ""), record.source_file
                )
                message = _summarize(problems_by_file[record.source_file])
                record.declared_spec = None
                self._refuse(record, Reason.VALIDATION_FAILED, message, previous_attempt, result)
            else:
                record.declared_spec = None  # no file declares it any more
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
        catalog = event_catalog(validation)
        result.duration_ms = round((time.perf_counter() - clock) * 1000, 2)
        return PassPlan(
            result,
            registry,
            self.applied if self.applied_changed else None,
            self.overrides if self.overrides != dict(self.base.overrides) else None,
            # only on change: intake keeps its compiled validators otherwise
            catalog if _catalog_key(catalog) != _catalog_key(self.base.catalog) else None,
            inputs,
            [r for r in touched if _differs(self.base.registry.get(r.id), r)],
            self.audit,
            self.lifted,
            removals,
        )

    def _inputs(self, claimants: list[DesiredIntegration], claimant: DesiredIntegration) -> Inputs:
        """Everything a converge step reads. Equal inputs give an equal outcome, so a pass skips
        integrations whose inputs are unchanged: a pass over 1,000 files costs what the changed ones cost.

        The git commit is not an input: an integration's revisions name the commit at which its
        content last changed, so a commit that leaves a file alone rewrites nothing."""
        secrets_state = (
            secrets_fingerprint(claimant.spec, self.environ, self.scope) if claimant.spec is not None else None
        )
        override = self.overrides.get(claimant.id)
        return (
            # dirty or not is an input: committing an edit as it is rewrites its revisions
            tuple((c.source_file, c.source_document, c.content_hash, self._dirty(c.source_file)) for c in claimants),
            tuple(p.as_text() for p in claimant.problems),
            secrets_state,
            (override.suspended, override.actor, override.reason) if override else None,
        )

    def _dirty(self, file: str) -> bool | None:
        """Whether the file differs from the commit (None outside git: there is no commit)."""
        return self.git.dirty(file) if self.git is not None else None

    def _revision(self, commit: str | None, content_hash: str, file: str) -> dict[str, Any]:
        """A revision names the commit and, when the work tree differs from it for this file
        (an uncommitted edit, an untracked file), says so: that content is not in the commit."""
        return {"commit": commit, "contentHash": content_hash, "file": file, "dirty": self._dirty(file)}

    def _set_applied(self, integration: AppliedIntegration) -> None:
        self.applied[integration.id] = integration
        self.applied_changed = True

    def _converge(
        self, record: IntegrationRecord, claimant: DesiredIntegration, revision: dict[str, Any], result: PassResult
    ) -> None:
        previous_attempt = record.last_attempted_revision
        record.last_attempted_revision = revision
        if not record.applied:
            # where it is declared, even while refused: a broken edit of that file must not remove it
            record.source_file, record.source_document = claimant.source_file, claimant.source_document
        if not claimant.valid or claimant.spec is None:
            record.declared_spec = None
            self._refuse(record, Reason.VALIDATION_FAILED, _summarize(claimant.problems), previous_attempt, result)
            return
        spec = claimant.spec
        canonical = canonical_spec(spec)
        digest = spec_hash(canonical)
        # what the file declares shows whether or not it can be applied (a pending one waits for secrets)
        record.declared_spec = record.spec if digest == record.spec_hash else canonical
        resolved, why = resolve_secrets(spec, self.environ, self.scope)
        if resolved is None:
            self._refuse(record, Reason.SECRET_MISSING, why, previous_attempt, result)
            return
        if why := own_store_refusal(spec, resolved, self.store_url):
            self._refuse(record, Reason.OWN_STORE, f"{claimant.source_file}: {why}", previous_attempt, result)
            return
        if digest != record.spec_hash or not record.applied:
            action = "change" if record.applied else "add"
            changes = diff_specs(record.spec or {}, canonical) if record.applied else []
            record.generation += 1
            record.spec, record.spec_hash = canonical, digest
            record.type, record.name = spec.type, spec.name
            record.applied_at = time.time()
            self.audit.append(
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
        running = self.applied.get(record.id)
        if running is None or running.generation != record.generation or running.resolved != resolved:
            self._set_applied(AppliedIntegration(record.id, record.generation, spec, resolved))
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
            f"matches {_where(revision)}",
            record.generation,
        )
        # Degraded is measured from deliveries, not declared: the health monitor
        # (reconciler/delivery/health.py) sets it

    def _refuse(
        self,
        record: IntegrationRecord,
        reason: str,
        message: str,
        previous_attempt: dict[str, Any] | None,
        result: PassResult,
    ) -> None:
        """Keep the last good version running (if any) and say why the new one was refused."""
        repeated = previous_attempt == record.last_attempted_revision and _was_refused(record, message)
        (result.waiting if reason == Reason.SECRET_MISSING else result.refused).append(record.id)
        result.why[record.id] = message
        running = self.applied.get(record.id) if record.applied else None
        if running is not None and running.resolved is None:
            # restored after a restart without a secret it needs: it cannot send nor verify
            ready = (Status.FALSE, Reason.SECRET_MISSING, self._cannot_run(running, reason, message))
        elif running is not None:
            ready = (Status.TRUE, Reason.APPLIED, f"generation {record.generation} (last good version) applied")
        else:
            ready = (Status.FALSE, reason if reason == Reason.SECRET_MISSING else Reason.NEVER_APPLIED, message)
        record.conditions = set_condition(record.conditions, ConditionType.READY, *ready, record.generation)
        record.conditions = set_condition(
            record.conditions, ConditionType.SYNCED, Status.FALSE, reason, message, record.generation
        )
        if not repeated:  # the audit trail records each refusal once, not every pass
            self.audit.append(
                AuditEntry(
                    "refuse", message, record.id, "reconciler", record.generation, record.last_attempted_revision
                )
            )

    def _cannot_run(self, running: AppliedIntegration, reason: str, message: str) -> str:
        """Why the last good version cannot run: every secret of its own that is missing (and the
        declared version's problem, when that is something else)."""
        _, why = resolve_secrets(running.spec, self.environ, self.scope)
        text = f"generation {running.generation} (last good version) cannot run: {why}"
        return text if reason == Reason.SECRET_MISSING and why == message else f"{text}; declared version: {message}"

    def _apply_override(self, record: IntegrationRecord) -> None:
        """Show a runtime suspension as drift; lift it once git agrees (active: false)."""
        override = self.overrides.get(record.id)
        if override is not None and override.suspended and record.spec is not None and not record.spec.get("active"):
            self.lifted.append(
                AuditEntry(
                    "resume",
                    "override lifted: git now declares active: false",
                    record.id,
                    "reconciler",
                    record.generation,
                    record.last_applied_revision,
                )
            )
            del self.overrides[record.id]
            override = None
        suspended = override is not None and override.suspended
        if override is not None and suspended:
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
        running = self.applied.get(record.id)
        if running is not None and running.suspended != suspended:
            self._set_applied(replace(running, suspended=suspended))


def _catalog_key(catalog: Mapping[str, EventType]) -> list[tuple[str, Any, Any]]:
    return [(name, event.schema, event.example) for name, event in sorted(catalog.items())]


def _note_unchanged(record: IntegrationRecord, result: PassResult) -> None:
    """An unchanged integration still counts in the pass's refused or waiting lists."""
    synced = condition(record.conditions, ConditionType.SYNCED)
    if synced is not None and synced["status"] == Status.FALSE:
        (result.waiting if synced["reason"] == Reason.SECRET_MISSING else result.refused).append(record.id)
        result.why[record.id] = synced["message"]


def _pick(claimants: list[DesiredIntegration], record: IntegrationRecord) -> DesiredIntegration:
    """With a duplicate id, report against the file the running version came from."""
    for claimant in claimants:
        if claimant.source_file == record.source_file:
            return claimant
    return claimants[0]


def _refusals(diagnostics: list[Diagnostic]) -> list[str]:
    """`file:line:col: message` of each error, at most MAX_REFUSAL_LINES per file: what the
    status page and the health document show of the files a pass refused."""
    lines: list[str] = []
    per_file: dict[str, int] = {}
    for d in sorted(diagnostics, key=lambda d: (d.file, d.line, d.column)):
        if d.severity is not Severity.ERROR:
            continue
        per_file[d.file] = per_file.get(d.file, 0) + 1
        if per_file[d.file] <= MAX_REFUSAL_LINES:
            lines.append(f"{d.location()}: {d.message}")
    return lines


def _summarize(problems: list[Diagnostic]) -> str:
    lines = [f"{p.location()}: {p.message}" for p in problems[:MAX_MESSAGE_PROBLEMS]]
    if len(problems) > MAX_MESSAGE_PROBLEMS:
        lines.append(f"and {len(problems) - MAX_MESSAGE_PROBLEMS} more")
    return "; ".join(lines) or "the file does not validate"


def _was_refused(record: IntegrationRecord, message: str) -> bool:
    synced = condition(record.conditions, ConditionType.SYNCED)
    return synced is not None and synced["message"] == message


def _change_message(action: str, changes: list[Any], revision: dict[str, Any]) -> str:
    where = _where(revision)
    if action == "add":
        return f"added from {where}"
    fields = ", ".join(c.pointer for c in changes[:5]) + (" ..." if len(changes) > 5 else "")
    return f"changed from {where}: {fields}"


def _where(revision: dict[str, Any]) -> str:
    """The file, at its commit, with uncommitted changes when it has some."""
    where = str(revision["file"]) + (f" at {revision['commit'][:12]}" if revision.get("commit") else "")
    return where + (" with uncommitted changes" if revision.get("dirty") else "")


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
        "declared_spec",
    )
    return any(getattr(old, k) != getattr(new, k) for k in keys)
