"""The store interface, shared by the SQLite and PostgreSQL implementations.

Both speak SQLAlchemy Core; what differs (engine set-up, upserts, locking) lives in
`sqlite.py` and `postgres.py`. Calls are synchronous and short; the daemon runs them in a
worker thread so the event loop never waits on disk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from reconciler.store import schema as t
from reconciler.store.endpoints import Endpoints
from reconciler.store.errors import StoreError, redact_url, scrub_url_secrets
from reconciler.store.history import History
from reconciler.store.outbox import Outbox
from reconciler.store.replicas import Replicas


@dataclass
class IntegrationRecord:
    """A registry row: what is applied for one integration, and its status."""

    id: str
    conditions: list[dict[str, Any]] = field(default_factory=list)
    type: str | None = None
    name: str | None = None
    generation: int = 0
    spec: dict[str, Any] | None = None  # applied spec, redacted; None: never applied
    spec_hash: str | None = None
    source_file: str | None = None
    source_document: int | None = None
    last_applied_revision: dict[str, Any] | None = None
    last_attempted_revision: dict[str, Any] | None = None
    applied_at: float | None = None
    updated_at: float = 0.0
    # the spec its file declares now (the version of last_attempted_revision), redacted like
    # `spec`; None: that version does not validate. Equal to `spec` once applied.
    declared_spec: dict[str, Any] | None = None

    @property
    def applied(self) -> bool:
        return self.spec is not None


@dataclass(frozen=True)
class Override:
    """A runtime suspension (break-glass): who, why and when; shown as drift from git."""

    integration_id: str
    suspended: bool
    reason: str
    actor: str
    at: float


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit trail: what the reconciler or an operator did, and to which version."""

    action: str  # add | change | remove | refuse | suspend | resume | ...
    message: str
    integration_id: str | None = None
    actor: str = "reconciler"
    generation: int | None = None
    revision: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)
    seq: int | None = None


_RECORD_COLUMNS = [c.name for c in t.integrations.columns]


class Store(Outbox, History, Endpoints, Replicas):
    """One database: the registry, runtime overrides, the audit trail, the outbox, the replicas
    and the state of endpoints they share (breakers, pauses)."""

    dialect = "sql"

    def __init__(self, url: str, engine: sa.Engine) -> None:
        self.url = url
        self.engine = engine
        # the change counters this process moved itself (name -> versions): a replica following
        # the store does not read back what it wrote
        self.own_versions: dict[str, set[int]] = {name: set() for name in t.VERSION_NAMES}

    # --- life cycle ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        with self.engine.begin() as connection:
            self._lock_for_migration(connection)
            t.schema_version.create(connection, checkfirst=True)
            current = connection.execute(sa.select(sa.func.max(t.schema_version.c.version))).scalar() or 0
            for version in sorted(v for v in t.MIGRATIONS if v > current):
                t.MIGRATIONS[version](connection)
                connection.execute(sa.insert(t.schema_version).values(version=version, applied_at=time.time()))
                current = version
        return current

    def _lock_for_migration(self, connection: sa.Connection) -> None:
        """Replicas starting together must not migrate twice (PostgreSQL takes a lock)."""

    def close(self) -> None:
        self.engine.dispose()

    def is_leader(self) -> bool:
        """Whether this process runs the singleton duties (scheduled syncs, retention). One
        process owns an SQLite store; PostgreSQL replicas elect one with an advisory lock."""
        return True

    def describe(self) -> str:
        """The URL without its password, for logs and errors."""
        return redact_url(self.url)

    def ping(self) -> None:
        """One round trip to the database: raises when it cannot be reached (readiness)."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    # --- registry -----------------------------------------------------------------------

    def list_integrations(self) -> list[IntegrationRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(t.integrations).order_by(t.integrations.c.id)).mappings()
            return [IntegrationRecord(**dict(row)) for row in rows]

    def get_integration(self, integration_id: str) -> IntegrationRecord | None:
        with self.engine.connect() as connection:
            row = (
                connection.execute(sa.select(t.integrations).where(t.integrations.c.id == integration_id))
                .mappings()
                .first()
            )
            return IntegrationRecord(**dict(row)) if row else None

    def save(self, records: Sequence[IntegrationRecord], audit: Iterable[AuditEntry] = ()) -> None:
        """Upsert registry rows and append audit entries in one transaction."""
        now = time.time()
        rows = [{**{name: getattr(record, name) for name in _RECORD_COLUMNS}, "updated_at": now} for record in records]
        with self._changing("registry") as connection:
            if rows:
                self._upsert(connection, t.integrations, rows, ["id"])
            self._append_audit(connection, audit)

    def delete_integration(self, integration_id: str, audit: Iterable[AuditEntry] = ()) -> None:
        """Remove a registry row; its deliveries stay in the outbox."""
        with self._changing("registry") as connection:
            connection.execute(sa.delete(t.integrations).where(t.integrations.c.id == integration_id))
            self._append_audit(connection, audit)

    # --- overrides ----------------------------------------------------------------------

    def set_override(self, override: Override, audit: AuditEntry) -> None:
        with self._changing("overrides") as connection:
            values = {
                "integration_id": override.integration_id,
                "suspended": override.suspended,
                "reason": override.reason,
                "actor": override.actor,
                "at": override.at,
            }
            self._upsert(connection, t.overrides, [values], ["integration_id"])
            self._append_audit(connection, [audit])

    def clear_override(self, integration_id: str, audit: AuditEntry) -> None:
        with self._changing("overrides") as connection:
            connection.execute(sa.delete(t.overrides).where(t.overrides.c.integration_id == integration_id))
            self._append_audit(connection, [audit])

    def overrides(self) -> dict[str, Override]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(t.overrides)).mappings()
            return {row["integration_id"]: Override(**dict(row)) for row in rows}

    # --- audit --------------------------------------------------------------------------

    def audit_trail(self, integration_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        query = sa.select(t.audit).order_by(t.audit.c.seq.desc()).limit(limit)
        if integration_id is not None:
            query = query.where(t.audit.c.integration_id == integration_id)
        with self.engine.connect() as connection:
            return [AuditEntry(**dict(row)) for row in connection.execute(query).mappings()]

    def _append_audit(self, connection: sa.Connection, entries: Iterable[AuditEntry]) -> None:
        rows = [
            {
                "at": e.at,
                "integration_id": e.integration_id,
                "action": e.action,
                "actor": e.actor,
                "generation": e.generation,
                "revision": e.revision,
                "message": e.message,
                "details": e.details,
            }
            for e in entries
        ]
        if rows:
            connection.execute(sa.insert(t.audit), rows)

    # --- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self.engine.connect() as connection:
            value = connection.execute(sa.select(t.meta.c.value).where(t.meta.c.key == key)).scalar()
            return default if value is None else value

    def set_meta(self, key: str, value: Any, *, changes: str | None = None) -> None:
        """Set a fact; `changes` names the change counter it moves (replicas follow "pass", the
        last pass, and "registry", which the event catalog is part of)."""
        with self._changing(*((changes,) if changes else ())) as connection:
            self._upsert(connection, t.meta, [{"key": key, "value": value}], ["key"])

    # --- change counters ----------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self, *names: str) -> Iterator[sa.Connection]:
        """A transaction that moves the named change counters as its last statements (their rows
        stay locked the shortest time); they count as this process's own once it commits."""
        with self.engine.begin() as connection:
            yield connection
            c = t.versions.c
            moved = {
                name: connection.execute(
                    sa.update(t.versions).where(c.name == name).values(version=c.version + 1).returning(c.version)
                ).scalar_one()
                for name in names
            }
        for name, version in moved.items():
            self.own_versions[name].add(version)

    def versions(self) -> dict[str, int]:
        """The change counters: one small read that says whether the shared state moved."""
        with self.engine.connect() as connection:
            return {row[0]: row[1] for row in connection.execute(sa.select(t.versions.c.name, t.versions.c.version))}

    # --- outbox (counts the registry shows; the event pipeline adds the rest) ------------

    def delivery_counts(self, integration_id: str | None = None) -> dict[str, int]:
        query = sa.select(t.deliveries.c.status, sa.func.count()).group_by(t.deliveries.c.status)
        if integration_id is not None:
            query = query.where(t.deliveries.c.integration_id == integration_id)
        with self.engine.connect() as connection:
            return {status: count for status, count in connection.execute(query)}

    # --- dialect --------------------------------------------------------------------------

    _insert: Any = None  # each dialect's insert(), which has on_conflict_do_update

    def _upsert(self, connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key: list[str]) -> None:
        """Insert or update `rows` (all with the same columns) by `key`, as one executemany."""
        statement = self._insert(table)
        updates = {name: statement.excluded[name] for name in rows[0] if name not in key}
        connection.execute(statement.on_conflict_do_update(index_elements=key, set_=updates), rows)


def open_store(url: str) -> Store:
    """Open (and migrate) the store at `url`: sqlite:///path or postgresql://user@host/db."""
    scheme = url.split(":", 1)[0].lower()
    store: Store
    if scheme == "sqlite":
        from reconciler.store.sqlite import SQLiteStore

        store = SQLiteStore.from_url(url)
    elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        from reconciler.store.postgres import PostgresStore

        store = PostgresStore.from_url(url)
    else:
        raise StoreError(
            f"unsupported store URL {redact_url(url)!r}: use sqlite:///path/to/state.db or postgresql://user@host/db"
        )
    try:
        store.migrate()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        # ProgrammingError too: the driver's word for a URL option it does not know
        store.close()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(f"cannot open the store at {redact_url(url)}: {scrub_url_secrets(reason, url)}") from None
    return store
