"""The store's tables and their versioned migrations.

Each migration is applied once, in order, at start; `schema_version` records the last one.
A migration never edits an earlier one: the schema only moves forward.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

# The registry: one row per integration the daemon knows, applied or refused.
integrations = sa.Table(
    "integrations",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    sa.Column("type", sa.String(16), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("spec", sa.JSON, nullable=True),  # the applied spec, secrets redacted; null: never applied
    sa.Column("spec_hash", sa.String(80), nullable=True),
    sa.Column("source_file", sa.String(1024), nullable=True),
    sa.Column("source_document", sa.Integer, nullable=True),
    sa.Column("last_applied_revision", sa.JSON, nullable=True),
    sa.Column("last_attempted_revision", sa.JSON, nullable=True),
    sa.Column("conditions", sa.JSON, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the spec the file declares now, redacted; null: that version does not validate (v3)
    sa.Column("declared_spec", sa.JSON, nullable=True),
)

# Runtime overrides of declared state (suspend/resume), shown as drift from git.
overrides = sa.Table(
    "overrides",
    metadata,
    sa.Column("integration_id", sa.String(63), primary_key=True),
    sa.Column("suspended", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

# The audit trail of reconcile actions and operator actions.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("integration_id", sa.String(63), nullable=True, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("generation", sa.Integer, nullable=True),
    sa.Column("revision", sa.JSON, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=True),
)

# Small facts of the daemon: the config revision, the last pass and its result.
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

# The outbox: events, one delivery per (event, subscribed integration), one attempt row each try.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event", sa.String(128), nullable=False),
    sa.Column("timestamp", sa.String(40), nullable=False),  # RFC 3339, up to nanoseconds and an offset
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("source", sa.String(80), nullable=False),  # api | cli | python | inbound:<id> | sync:<id>
    # set for inbound webhooks: the sender's message id; a repeat is acknowledged, not re-emitted
    sa.Column("dedup_key", sa.String(255), nullable=True, unique=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False, index=True),
    sa.Column("integration_id", sa.String(63), nullable=False),
    sa.Column("subscription", sa.Integer, nullable=False, server_default="0"),  # index in `webhooks`
    # pending: not tried yet; failed: tried, will retry; delivered; dead: out of attempts
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("batch_id", sa.String(64), nullable=True, index=True),  # stable webhook-id of its batch
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Index("deliveries_due", "status", "next_attempt_at"),
    sa.Index("deliveries_by_integration", "integration_id", "status"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(80), nullable=False, index=True),  # or sync:<integration id>
    sa.Column("integration_id", sa.String(63), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),  # 1 for the first try of the delivery
    sa.Column("trigger", sa.String(16), nullable=False),  # scheduled | replay | test | sync | takeover
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    # delivered | failed | dead | gone | skipped | takeover (the lease of a dead replica, cleared)
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("response_excerpt", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

# What holds an endpoint, shared by every replica (v5): its circuit breaker (kind "breaker",
# keyed by scheme and host) or a partner's Retry-After pause (kind "pause", keyed by URL).
# `version` grows with every change: a change is written only over the version it was made
# from, so replicas racing to open a breaker or to take its one probe cannot both win.
endpoint_states = sa.Table(
    "endpoint_states",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(2048), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # consecutive, over all replicas
    sa.Column("opened", sa.Integer, nullable=False, server_default="0"),  # openings in a row: the cool-down doubles
    sa.Column("open_until", sa.Float, nullable=True),  # set while open; past it, one probe may go
    sa.Column("probe_owner", sa.String(200), nullable=True),  # the replica's probe in flight
    sa.Column("probe_until", sa.Float, nullable=True),  # its claim lapses then (a replica that died)
    sa.Column("paused_until", sa.Float, nullable=True),  # a Retry-After pause holds until then
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float, nullable=False, index=True),
)


# Change counters of the state replicas share: each write of the registry (and the event
# catalog), of the overrides, or of the last pass adds one in its own transaction, under the
# row's lock, so the counter moves in commit order and no change is lost to a concurrent one.
# Replicas poll these few rows to know when to read the state again.
VERSION_NAMES = ("registry", "overrides", "pass")
versions = sa.Table(
    "versions",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)


# The replicas running on this store: each heartbeats its row; the leases of a replica whose
# heartbeat stopped are taken over by the others (v6).
replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the delivery engine's lease owner: host:pid:suffix
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("config_revision", sa.String(80), nullable=True),
    sa.Column("leader", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),  # the database's clock, not the replica's
)


def _v1(connection: sa.Connection) -> None:
    for table in (integrations, overrides, audit, meta, events, deliveries, attempts):
        table.create(connection, checkfirst=True)


def _v2(connection: sa.Connection) -> None:
    # claims find the rows they just leased by the lease's (unique) expiry: without an index
    # that is a scan of every delivery ever kept
    connection.exec_driver_sql("CREATE INDEX IF NOT EXISTS deliveries_lease ON deliveries (lease_expires_at)")


def _v3(connection: sa.Connection) -> None:
    # a pending integration shows what its file declares, not only what was applied; a store
    # created at version 1 by this release already has the column
    if "declared_spec" not in {c["name"] for c in sa.inspect(connection).get_columns("integrations")}:
        connection.exec_driver_sql("ALTER TABLE integrations ADD COLUMN declared_spec JSON")


def _v4(connection: sa.Connection) -> None:
    versions.create(connection, checkfirst=True)
    present = set(connection.execute(sa.select(versions.c.name)).scalars())
    missing = [{"name": name, "version": 0} for name in VERSION_NAMES if name not in present]
    if missing:
        connection.execute(sa.insert(versions), missing)


def _v5(connection: sa.Connection) -> None:
    # circuit breakers and Retry-After pauses shared by the replicas of one store
    endpoint_states.create(connection, checkfirst=True)


def _v6(connection: sa.Connection) -> None:
    # no index on deliveries.lease_owner: the few leased rows are found through deliveries_lease
    # (lease_expires_at IS NOT NULL), and the hot path's writes keep one index fewer
    replicas.create(connection, checkfirst=True)


# version -> migration; append, never edit (version 1 is the schema of the first release)
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6}
