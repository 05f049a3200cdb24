"""The scale-out store: PostgreSQL, shared by several `reconciler run` replicas."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from reconciler.store.base import Store

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

    _leader_connection: Any = None
    _leader_guard = threading.Lock()

    def is_leader(self) -> bool:
        """Try for the lock, or check that the connection holding it is still alive (if it
        dropped, the lock went with it and another replica may lead now). Raises when the
        database cannot be reached: the caller cannot lead then, and says so."""
        with self._leader_guard:
            if self._leader_connection is not None:
                try:
                    cursor = self._leader_connection.cursor()
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                    return True
                except Exception:
                    # dropped, not closed: a close would first try to roll back on the dead
                    # connection, and log that failure as an error
                    with contextlib.suppress(Exception):
                        self._leader_connection.invalidate()
                    self._leader_connection = None
            connection = None
            try:
                # inside the try: an unreachable database must not leave a half-open connection
                connection = self.engine.raw_connection()
                cursor = connection.cursor()
                cursor.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (LEADER_LOCK_CLASS,))
                row = cursor.fetchone()
                connection.commit()
            except Exception:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.invalidate()
                raise
            if not (row and row[0]):
                connection.close()
                return False
            self._leader_connection = connection  # the session lock lives as long as this connection
            return True

    def close(self) -> None:
        if self._leader_connection is not None:
            self._leader_connection.close()
            self._leader_connection = None
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
