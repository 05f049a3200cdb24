"""Replicas: the `reconciler run` processes on one store, their heartbeats, and the takeover
of what a dead one held.

Each replica has a row, keyed by its delivery engine's lease owner, and refreshes its
`heartbeat_at` every second or so. A replica whose heartbeat is older than the dead-after
threshold is dead: any survivor clears the leases it held (one attempt row each, outcome
`takeover`, saying that the delivery may have been sent already), then deletes its row. The
times are the database's clock, so replicas on hosts whose clocks differ judge alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from reconciler.store import schema as t

RETRYABLE = ("pending", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaInfo:
    """What a replica says of itself when it registers."""

    id: str
    role: str
    version: str
    host: str
    pid: int
    config_revision: str | None = None


@dataclass(frozen=True, slots=True)
class Takeover:
    """The leases of one dead replica, cleared by a survivor."""

    replica_id: str
    silent_seconds: float  # how long its heartbeat had stopped
    deliveries: int


class Replicas:
    """Mixed into Store: needs `self.engine`, `_bookkeeping`, `_lock_due`, `_mark`."""

    engine: sa.Engine
    # the database's clock in epoch seconds (SQLite here; PostgreSQL overrides it)
    _now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    if TYPE_CHECKING:  # what Store and Outbox provide

        def _mark(self) -> str: ...

        def _bookkeeping(self) -> contextlib.AbstractContextManager[sa.Connection]: ...

        def _lock_due(self, query: sa.Select[Any]) -> sa.Select[Any]: ...

        def _upsert(
            self, connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key: list[str]
        ) -> None: ...

    def database_time(self, connection: sa.Connection) -> float:
        return float(connection.exec_driver_sql(f"SELECT {self._now_sql}").scalar() or 0.0)

    def register_replica(self, replica: ReplicaInfo) -> None:
        """Insert (or renew, after it was declared dead) this replica's row."""
        with self.engine.begin() as connection:
            now = self.database_time(connection)
            row = {
                "id": replica.id,
                "role": replica.role,
                "version": replica.version,
                "host": replica.host[:255],
                "pid": replica.pid,
                "config_revision": replica.config_revision,
                "leader": False,
                "started_at": now,
                "heartbeat_at": now,
            }
            self._upsert(connection, t.replicas, [row], ["id"])

    def heartbeat(self, replica_id: str, config_revision: str | None, leader: bool) -> bool:
        """Refresh this replica's row; False when it is gone: the replica was declared dead, and
        what it held has been (or is being) taken over. One small UPDATE."""
        mark = self._mark()
        with self._bookkeeping() as connection:
            result = connection.exec_driver_sql(
                f"UPDATE replicas SET heartbeat_at = {self._now_sql}, config_revision = {mark}, leader = {mark} "
                f"WHERE id = {mark}",
                (config_revision, leader, replica_id),
            )
            return bool(result.rowcount)

    def deregister_replica(self, replica_id: str) -> None:
        """A clean stop: the row goes (its leases were given back before)."""
        with self.engine.begin() as connection:
            connection.execute(sa.delete(t.replicas).where(t.replicas.c.id == replica_id))

    def take_over_dead_replicas(self, dead_after: float) -> list[Takeover]:
        """Clear the leases of every replica silent for `dead_after` seconds and delete its row.

        Race-safe between survivors: a dead replica's row is locked (SKIP LOCKED) by the one
        survivor that takes it over. Each delivery taken over gets an attempt row (outcome
        `takeover`): the dead replica may have sent it before it died, and it is sent again."""
        r, d = t.replicas.c, t.deliveries.c
        taken: list[Takeover] = []
        with self.engine.begin() as connection:
            now = self.database_time(connection)
            dead = self._lock_due(
                sa.select(r.id, r.heartbeat_at).where(r.heartbeat_at < now - dead_after).order_by(r.id)
            )
            for replica_id, heartbeat_at in connection.execute(dead).all():
                silent = now - heartbeat_at
                cleared = connection.execute(
                    sa.update(t.deliveries)
                    .where(d.lease_expires_at.is_not(None), d.lease_owner == replica_id, d.status.in_(RETRYABLE))
                    .values(lease_owner=None, lease_expires_at=None)
                    .returning(d.id, d.integration_id, d.attempts, d.batch_id)
                ).all()
                if cleared:
                    connection.execute(
                        sa.insert(t.attempts), [_takeover_attempt(row, replica_id, silent, now) for row in cleared]
                    )
                connection.execute(sa.delete(t.replicas).where(r.id == replica_id))
                taken.append(Takeover(replica_id, silent, len(cleared)))
        return taken

    def replicas(self) -> tuple[float, list[dict[str, Any]]]:
        """The database's time now and every replica's row with the leases it holds, by id."""
        r, d = t.replicas.c, t.deliveries.c
        with self.engine.connect() as connection:
            now = self.database_time(connection)
            rows = [dict(row) for row in connection.execute(sa.select(t.replicas).order_by(r.id)).mappings()]
            held: dict[str, int] = dict(
                connection.execute(
                    sa.select(d.lease_owner, sa.func.count())
                    .where(d.lease_expires_at.is_not(None), d.lease_owner.is_not(None))
                    .group_by(d.lease_owner)
                ).all()
            )
        for row in rows:
            row["leases"] = held.get(row["id"], 0)
        return now, rows


def _takeover_attempt(row: Any, replica_id: str, silent: float, now: float) -> dict[str, Any]:
    delivery_id, integration_id, attempts, batch_id = row
    return {
        "delivery_id": delivery_id,
        "integration_id": integration_id,
        "at": now,
        "attempt": attempts + 1,
        "trigger": "takeover",
        "batch_id": batch_id,
        "status_code": None,
        "latency_ms": None,
        "outcome": "takeover",
        "response_excerpt": None,
        "error": (
            f"taken over from replica {replica_id}, silent for {silent:.1f} s: it held this delivery and "
            "may have sent it before it stopped; it is sent again"
        ),
    }
