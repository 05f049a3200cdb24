"""The store: registry, overrides, audit trail, and the outbox, on SQLite or PostgreSQL."""

from __future__ import annotations

from reconciler.store.base import (
    AuditEntry,
    IntegrationRecord,
    Override,
    Store,
    StoreError,
    open_store,
)
from reconciler.store.facade import AsyncStore, StoreOnLoop
from reconciler.store.records import Attempt, DueDelivery, NewDelivery, NewEvent, Outcome

__all__ = [
    "AsyncStore",
    "Attempt",
    "AuditEntry",
    "DueDelivery",
    "IntegrationRecord",
    "NewDelivery",
    "NewEvent",
    "Outcome",
    "Override",
    "Store",
    "StoreError",
    "StoreOnLoop",
    "open_store",
]
