"""The store: registry, overrides, audit trail, and the outbox, on SQLite or PostgreSQL."""

from __future__ import annotations

from reconciler.store.base import (
    AuditEntry,
    IntegrationRecord,
    Override,
    Store,
    open_store,
)
from reconciler.store.endpoints import EndpointChange, EndpointRow
from reconciler.store.errors import Outage, StoreError, StoreUnavailable
from reconciler.store.facade import AsyncStore, StoreOnLoop
from reconciler.store.records import Attempt, DueDelivery, NewDelivery, NewEvent, Outcome
from reconciler.store.replicas import ReplicaInfo, Takeover

__all__ = [
    "AsyncStore",
    "Attempt",
    "AuditEntry",
    "DueDelivery",
    "EndpointChange",
    "EndpointRow",
    "IntegrationRecord",
    "NewDelivery",
    "NewEvent",
    "Outage",
    "Outcome",
    "Override",
    "ReplicaInfo",
    "Store",
    "StoreError",
    "StoreOnLoop",
    "StoreUnavailable",
    "Takeover",
    "open_store",
]
