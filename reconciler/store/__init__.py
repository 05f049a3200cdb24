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

__all__ = ["AuditEntry", "IntegrationRecord", "Override", "Store", "StoreError", "open_store"]
