"""The scale-out store: PostgreSQL, shared by several `reconciler run` replicas."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from reconciler.store.base import Store
from reconciler.store.outbox import INSERT_DELIVERIES, INSERT_EVENTS

log = logging.getLogger("reconciler.store")

# pg_advisory_xact_lock key for migrations: replicas starting together migrate once.
# Advisory locks are per database, and one database may hold several stores (one schema each,
# chosen by the URL's search_path): each lock is the pair (class, hash of the store's schema),
# so replicas of one store contend and other stores in the same database do not.
MIGRATION_LOCK_CLASS = 0x5245434D  # "RECM": held while migrating
LEADER_LOCK_CLASS = 0x5245434C  # "RECL": held for as long as a replica leads (its connection stays open)
PRUNE_LOCK_CLASS = 0x52454350  # "RECP": held while one replica applies retention
CONNECT_TIMEOUT_SECONDS = 5  # unless the URL says connect_timeout=


class PostgresStore(Store):
    """The store on PostgreSQL, for several replicas on one database: claims skip locked rows,
    singleton duties follow an advisory lock."""

    dialect = "postgresql"
    _insert = staticmethod(insert)  # the dialect's INSERT ... ON CONFLICT

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        _scheme, rest = url.split("://", 1)
        # a host that stops answering (a failover, a partition) fails a connection attempt in
        # seconds rather than the kernel's minutes, so the roles back off and try again
        connect_args = {} if "connect_timeout=" in rest else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        engine = sa.create_engine(
            f"postgresql+psycopg://{rest}",
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args=connect_args,
        )
        return cls(url, engine)

    # the database's clock in epoch seconds: heartbeats are judged by one clock, whatever the hosts' say
    _now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::float8"

    _leader_connection: Any = None  # a connection of its own, out of the pool, in autocommit
    _leading = False
    _leader_guard = threading.Lock()

    def is_leader(self) -> bool:
        """Try for the lock, or check that the connection holding it is still alive (if it
        dropped, the lock went with it and another replica may lead now). Raises when the
        database cannot be reached: the caller cannot lead then, and says so.

        The connection is kept between tries and runs in autocommit: it never sits idle in a
        transaction (which `idle_in_transaction_session_timeout` would end, lock and all), and
        a replica that does not lead asks again on it without opening a connection each time."""
        with self._leader_guard:
            try:
                connection = self._leader_session()
                cursor = connection.cursor()
                if self._leading:
                    cursor.execute("SELECT 1")
                else:
                    cursor.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (LEADER_LOCK_CLASS,))
                row = cursor.fetchone()
            except Exception as exc:
                self._drop_leader_session()
                self._set_leading(False, f"the connection holding the lock failed: {type(exc).__name__}")
                raise
            self._set_leading(self._leading or bool(row and row[0]))
            return self._leading

    def _leader_session(self) -> Any:
        if self._leader_connection is None:
            # inside the caller's try: an unreachable database must not leave a half-open connection
            connection = self.engine.raw_connection()
            self._leader_connection = connection
            connection.rollback()  # the pool's liveness ping may have opened a transaction
            connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            connection.detach()  # the session lock lives as long as this connection: never back to the pool
        return self._leader_connection

    def _drop_leader_session(self) -> None:
        # dropped, not closed: a close would first try to roll back on the dead connection,
        # and log that failure as an error
        if self._leader_connection is not None:
            with contextlib.suppress(Exception):
                self._leader_connection.invalidate()
            self._leader_connection = None

    def _set_leading(self, leading: bool, why: str | None = None) -> None:
        """Log each change of leadership, once."""
        if leading == self._leading:
            return
        self._leading = leading
        fields = {"store": self.describe()}
        if leading:
            log.info("leadership acquired: this replica runs the singleton duties", extra={"fields": fields})
        else:
            log.warning("leadership lost", extra={"fields": {**fields, "reason": why or "unknown"}})

    def close(self) -> None:
        if self._leader_connection is not None:
            with contextlib.suppress(Exception):
                self._leader_connection.close()
            self._leader_connection = None
        if self._leading:
            self._leading = False
            log.info("leadership given up: the replica stops", extra={"fields": {"store": self.describe()}})
        super().close()

    @contextlib.contextmanager
    def _bookkeeping(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as connection:
            # the commit returns before the WAL reaches disk; a server crash can lose it, which
            # means an attempt made again, never an event lost
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield connection

    def _lock_due(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=True)

    def _insert_new(
        self, connection: sa.Connection, event_rows: list[tuple[Any, ...]], delivery_rows: list[tuple[Any, ...]]
    ) -> None:
        # both statements in one pipeline: one round trip to the server instead of two, which
        # is most of a small group's cost when several replicas each commit their own groups
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.pipeline(), raw.cursor() as cursor:
            if event_rows:
                cursor.executemany(INSERT_EVENTS.replace("?", "%s"), event_rows)
            if delivery_rows:
                cursor.executemany(INSERT_DELIVERIES.replace("?", "%s"), delivery_rows)

    def _prune_alone(self, connection: sa.Connection) -> bool:
        # every replica that delivers prunes on its hour; whichever comes second finds the lock taken
        held = connection.execute(
            sa.text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": PRUNE_LOCK_CLASS}
        ).scalar()
        return bool(held)

    def _lock_for_migration(self, connection: sa.Connection) -> None:
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": MIGRATION_LOCK_CLASS}
        )
