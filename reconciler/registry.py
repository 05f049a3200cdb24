"""The registry types every stage may import: what is applied, and the snapshot that holds it.

One owner of runtime state: the reconcile loop. A pass computes a new `Snapshot` off the
event loop; the loop publishes it with one assignment. Everything in a snapshot is immutable
once published (its mappings are read-only views; `IntegrationRecord`s in it are never
changed again: a pass copies a record before it converges it), so a reader that takes the
snapshot once per operation sees one consistent state, however many passes run meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, EventType
from reconciler.manifests.models import AnyIntegration
from reconciler.store import IntegrationRecord, Override


@dataclass(frozen=True)
class Resolved:
    """The secrets behind an integration's references: held in memory only, never stored."""

    values: Mapping[str, str]  # reference text -> value
    fingerprint: str  # changes when any value changes (a rotated secret file), reveals nothing

    def substitute(self, text: str) -> str:
        """The text with its secret references replaced by their resolved values."""
        if "${" not in text:
            return text
        for reference, value in self.values.items():
            text = text.replace(reference, value)
        return text


def scrub(text: str, secrets: Iterable[str], min_chars: int = 1) -> str:
    """The text with every secret value (of at least `min_chars`) replaced by ***, longest first
    so that a secret containing another is hidden whole."""
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= min_chars:
            text = text.replace(value, "***")
    return text


def substitute(text: str, resolved: Resolved | None) -> str:
    """The text with its secret references replaced, or as it is when nothing is resolved."""
    return text if resolved is None else resolved.substitute(text)


@dataclass(frozen=True)
class AppliedIntegration:
    """What the delivery side runs: the applied spec and its resolved secrets (memory only).

    Frozen: a change (a suspension, a removal starting) is a new object in a new snapshot."""

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
    """What one reconcile pass did, as `reconciler status` and the log show it."""

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
    dirty_files: list[str] = field(default_factory=list)  # files that differ from `revision` (uncommitted)
    why: dict[str, str] = field(default_factory=dict)  # refused or waiting integration -> what holds it back
    # the errors of the refused files, `file:line:col: message` each (the first few per file)
    refusals: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The pass ran to its end. A file refused or a secret not yet set is the state of the
        files (`refused`, `waiting`, `files_refused` say which), not a failure of the pass."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a dict that nothing else holds any more."""
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Snapshot:
    """The runtime state at one moment: published whole, never changed.

    `applied` is a new mapping only when what runs changed, so the stages that derive
    something from it (the router, the inbound index, the engine's caches) rebuild it when
    `snapshot.applied is not` what they built from."""

    version: int
    applied: Mapping[str, AppliedIntegration]
    registry: Mapping[str, IntegrationRecord]
    catalog: Mapping[str, EventType]
    overrides: Mapping[str, Override]

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(0, frozen({}), frozen({}), frozen(BUILTIN_EVENT_TYPES), frozen({}))

    def suspended(self, integration_id: str) -> bool:
        override = self.overrides.get(integration_id)
        return override is not None and override.suspended


class SnapshotSource(Protocol):
    """Whoever owns the runtime state (the reconciler); readers take `snapshot` once per operation."""

    @property
    def snapshot(self) -> Snapshot: ...
