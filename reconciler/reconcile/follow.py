"""Following the shared state from the store: what a replica that does not reconcile runs on.

Several replicas share one PostgreSQL store; one of them, the controller, reconciles the files
into the registry, and any of them may suspend or resume an integration. Every replica reads
back what the others wrote: the store keeps change counters (`versions`: registry, overrides,
pass) that each write moves in its own transaction, a replica polls them, and reads again only
what moved, never what it wrote itself. What is read here is published by the reconciler
(loop.py), the one owner of runtime state, like a pass.

`read_shared` runs off the event loop; an integration whose stored version is the one already
running keeps its very object, so the stages that derive something from it keep what they built.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.events.catalog import BUILTIN_EVENT_TYPES, EventType
from reconciler.manifests.models import INTEGRATION_MODELS
from reconciler.manifests.secrets import SecretScope
from reconciler.reconcile.desired import resolve_secrets
from reconciler.registry import AppliedIntegration, PassResult, Snapshot
from reconciler.store import IntegrationRecord, Override, Store

log = logging.getLogger("reconciler.reconcile")

FOLLOW_SECONDS = 0.5  # how often a replica polls the change counters (suspensions reach every replica within 1 s)
CATALOG_KEY = "catalog"  # meta: the event types the files declare, written by the controller
LAST_PASS_KEY = "last_pass"  # meta: the controller's last pass
PASS_FIELDS = {f.name for f in dataclasses.fields(PassResult)}


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What was read back from the store; None: not read (it did not move)."""

    registry: dict[str, IntegrationRecord] | None = None
    overrides: dict[str, Override] | None = None
    applied: dict[str, AppliedIntegration] | None = None
    catalog: dict[str, EventType] | None = None
    last_pass: PassResult | None = None


def moved(seen: Mapping[str, int], now: Mapping[str, int], own: Mapping[str, set[int]]) -> set[str]:
    """The counters that moved since `seen` by anyone's write but this process's own."""
    return {
        name
        for name, version in now.items()
        if version != seen.get(name)
        and not all(v in own.get(name, ()) for v in range(seen.get(name, 0) + 1, version + 1))
    }


def read_shared(
    store: Store,
    base: Snapshot,
    names: set[str],
    environ: Mapping[str, str] | None,
    scope: SecretScope,
) -> Shared:
    """Off the loop: the parts of the shared state named by `names`, with what runs rebuilt
    only for the integrations whose stored version changed.

    The last pass is read first: the controller stores a pass's registry rows and event types
    before the pass itself, so a registry read after it holds at least what that pass applied."""
    last_pass = None
    if "pass" in names:
        stored = store.get_meta(LAST_PASS_KEY)
        if isinstance(stored, dict):
            last_pass = PassResult(**{k: v for k, v in stored.items() if k in PASS_FIELDS})
    registry = {r.id: r for r in store.list_integrations()} if "registry" in names else None
    overrides = store.overrides() if names & {"registry", "overrides"} else None
    applied = None
    if registry is not None or overrides is not None:
        applied = _applied(
            registry if registry is not None else dict(base.registry), overrides or {}, base, environ, scope
        )
    catalog = None
    if "registry" in names:
        catalog = {**BUILTIN_EVENT_TYPES, **declared_event_types(store.get_meta(CATALOG_KEY) or {})}
    return Shared(registry=registry, overrides=overrides, applied=applied, catalog=catalog, last_pass=last_pass)


def _applied(
    registry: Mapping[str, IntegrationRecord],
    overrides: Mapping[str, Override],
    base: Snapshot,
    environ: Mapping[str, str] | None,
    scope: SecretScope,
) -> dict[str, AppliedIntegration]:
    applied: dict[str, AppliedIntegration] = {}
    for record in registry.values():
        suspended = bool(overrides.get(record.id) and overrides[record.id].suspended)
        running = base.applied.get(record.id)
        known = base.registry.get(record.id)
        if running is not None and known is not None and _same_version(known, record):
            applied[record.id] = running if running.suspended == suspended else replace(running, suspended=suspended)
            continue
        built = applied_of(record, suspended, environ, scope)
        if built is not None:
            applied[record.id] = built
    return applied


def _same_version(known: IntegrationRecord, stored: IntegrationRecord) -> bool:
    return known.generation == stored.generation and known.spec_hash == stored.spec_hash and known.spec is not None


def applied_of(
    record: IntegrationRecord, suspended: bool, environ: Mapping[str, str] | None, scope: SecretScope
) -> AppliedIntegration | None:
    """What runs for a stored registry row: its applied spec with its secrets resolved here
    (each replica reads its own environment and secret files), or None when it never applied."""
    if record.spec is None or record.type not in INTEGRATION_MODELS:
        return None
    try:
        spec = INTEGRATION_MODELS[record.type].model_validate(record.spec)
    except ValueError:
        return None  # stored by an older format; the controller's next pass decides
    resolved, _ = resolve_secrets(spec, environ, scope)
    return AppliedIntegration(record.id, record.generation, spec, resolved, suspended)


def stored_event_types(catalog: Mapping[str, EventType]) -> dict[str, Any]:
    """The event types the files declare, as the controller stores them for the other replicas."""
    return {
        name: {"description": e.description, "schema": e.schema, "example": e.example}
        for name, e in sorted(catalog.items())
        if not e.builtin
    }


def declared_event_types(stored: Mapping[str, Any]) -> dict[str, EventType]:
    return {
        name: EventType(
            name, value.get("description", ""), value.get("schema") or {}, value.get("example") or {}, False
        )
        for name, value in stored.items()
        if isinstance(value, dict)
    }


__all__ = ["FOLLOW_SECONDS", "Shared", "applied_of", "moved", "read_shared", "stored_event_types"]
