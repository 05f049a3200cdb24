"""The transactional outbox: events, one delivery per subscribed integration, attempts.

An event and its deliveries are committed together before the event is acknowledged.
Workers claim due deliveries with a lease (an owner and an expiry): a crashed worker's claims
expire and are taken over, so delivery is at-least-once. Writes come in batches: one
transaction for many intakes (group commit), one for many outcomes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from reconciler.store import schema as t
from reconciler.store.records import Attempt, DueDelivery, NewDelivery, NewEvent, Outcome, StoredEvent

RETRYABLE = ("pending", "failed")
# SQLite's default limit on bound parameters is 32,766; stay far below it per statement.
IN_CHUNK = 500
ATTEMPT_ROWS = 200  # rows per multi-row INSERT: 11 parameters each, far below SQLite's 32,766
EVENT_ROWS = 500  # events per multi-row INSERT of a group with dedup keys: 7 parameters each
EVENT_COLUMNS = "id, event, timestamp, data, source, dedup_key, created_at"
INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # ? is the dialect's mark
INSERT_DELIVERIES = (
    "INSERT INTO deliveries (id, event_id, integration_id, subscription, status, attempts, "
    "next_attempt_at, lease_owner, lease_expires_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _delivery_rows(
    deliveries: Sequence[NewDelivery], duplicates: dict[str, StoredEvent], now: float
) -> list[tuple[Any, ...]]:
    """The rows of the deliveries of events stored now (not of repeats), pending and untried."""
    return [
        (
            d.id,
            d.event_id,
            d.integration_id,
            d.subscription,
            "pending",
            0,
            d.next_attempt_at,
            d.lease_owner,
            d.lease_expires_at,
            now,
            now,
        )
        for d in deliveries
        if d.event_id not in duplicates
    ]


class Outbox:
    """Mixed into Store: needs `self.engine`; a dialect may lock claimed rows in `_lock_due`."""

    engine: sa.Engine

    @contextlib.contextmanager
    def _bookkeeping(self) -> Iterator[sa.Connection]:
        """A transaction for claims, batch membership and outcomes: writes whose loss in a power
        failure costs at most a repeated attempt (at-least-once holds), never an event. A
        dialect may commit them without waiting for the disk; events always wait."""
        with self.engine.begin() as connection:
            yield connection

    def enqueue(self, events: Sequence[NewEvent], deliveries: Sequence[NewDelivery]) -> dict[str, StoredEvent]:
        """Commit events and their deliveries in one transaction.

        Returns {event id: the event already stored} for events whose dedup key (or id) was
        taken before, by an earlier commit, by a concurrent one on another replica, or earlier
        in the same group: those are not stored again, nor are their deliveries.
        """
        now = time.time()
        rows = [
            (e.id, e.event, e.timestamp, e.data_json or json.dumps(e.data), e.source, e.dedup_key, now) for e in events
        ]
        with self.engine.begin() as connection:
            if any(e.dedup_key for e in events):
                duplicates = self._insert_keyed(connection, events, rows)
                self._insert_deliveries(connection, _delivery_rows(deliveries, duplicates, now))
            else:
                duplicates = {}
                self._insert_new(connection, rows, _delivery_rows(deliveries, duplicates, now))
        return duplicates

    def _prune_alone(self, connection: sa.Connection) -> bool:
        """Whether this transaction may prune: one replica at a time (a dialect with several
        replicas takes a lock and says False when another holds it)."""
        return True

    def _mark(self) -> str:
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def _insert_new(
        self, connection: sa.Connection, event_rows: list[tuple[Any, ...]], delivery_rows: list[tuple[Any, ...]]
    ) -> None:
        """Events none of which has a dedup key, and their deliveries (a dialect may send both
        statements in one round trip)."""
        self._insert_events(connection, event_rows)
        self._insert_deliveries(connection, delivery_rows)

    def _insert_deliveries(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            connection.exec_driver_sql(INSERT_DELIVERIES.replace("?", self._mark()), rows)

    def _insert_events(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """The hot path of intake: plain driver executemany with JSON serialised by the caller,
        about five times cheaper than SQLAlchemy's per-row bind processing."""
        if rows:
            connection.exec_driver_sql(INSERT_EVENTS.replace("?", self._mark()), rows)

    def _insert_keyed(
        self, connection: sa.Connection, events: Sequence[NewEvent], rows: list[tuple[Any, ...]]
    ) -> dict[str, StoredEvent]:
        """Insert a group holding events with a dedup key: whichever key (or id) is already
        taken is skipped by the database itself (ON CONFLICT DO NOTHING), so two replicas
        committing one key at once store it once; RETURNING says which rows went in."""
        inserted: set[str] = set()
        mark = self._mark()
        for start in range(0, len(rows), EVENT_ROWS):
            chunk = rows[start : start + EVENT_ROWS]
            values = ", ".join(f"({', '.join([mark] * 7)})" for _ in chunk)
            statement = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id"
            flat = [value for row in chunk for value in row]
            inserted.update(row[0] for row in connection.exec_driver_sql(statement, tuple(flat)))
        skipped = [e for e in events if e.id not in inserted]
        if not skipped:
            return {}
        found = self._stored_events(connection, skipped)
        duplicates = {}
        for event in skipped:
            original = found.get(("key", event.dedup_key)) or found.get(("id", event.id))
            if original is not None:
                duplicates[event.id] = original
        return duplicates

    def _stored_events(self, connection: sa.Connection, skipped: list[NewEvent]) -> dict[tuple[str, Any], StoredEvent]:
        """The stored events holding the keys or ids of skipped ones, with their delivery counts."""
        e, d = t.events.c, t.deliveries.c
        keys = [x.dedup_key for x in skipped if x.dedup_key]
        ids = [x.id for x in skipped]
        deliveries = sa.select(sa.func.count()).where(d.event_id == e.id).correlate(t.events).scalar_subquery()
        query = sa.select(e.id, e.event, e.timestamp, e.data, e.dedup_key, deliveries).where(
            sa.or_(e.dedup_key.in_(keys), e.id.in_(ids))
        )
        found: dict[tuple[str, Any], StoredEvent] = {}
        for row in connection.execute(query):
            data = json.loads(row[3]) if isinstance(row[3], str) else row[3]
            stored = StoredEvent(row[0], row[1], row[2], data, row[5])
            found[("id", row[0])] = stored
            if row[4] is not None:
                found[("key", row[4])] = stored
        return found

    def claim(
        self, owner: str, integration_ids: Iterable[str], now: float, limit: int, lease_seconds: float
    ) -> list[DueDelivery]:
        """Lease up to `limit` due deliveries of the given integrations, oldest due first."""
        ids = list(integration_ids)
        claimed: list[DueDelivery] = []
        with self._bookkeeping() as connection:
            for start in range(0, len(ids), IN_CHUNK):
                room = limit - len(claimed)
                if room <= 0:
                    break
                statement = self._claim_statement(ids[start : start + IN_CHUNK], owner, now, room, lease_seconds)
                # positional rows: RETURNING lists DueDelivery's fields in order
                claimed += [DueDelivery(*row) for row in connection.execute(statement)]
            claimed += self._claim_batch_mates(connection, claimed, owner, now, lease_seconds)
            self._attach_envelopes(connection, claimed)
        claimed.sort(key=lambda d: d.created_at)
        return claimed

    def _claim_batch_mates(
        self, connection: sa.Connection, claimed: list[DueDelivery], owner: str, now: float, lease_seconds: float
    ) -> list[DueDelivery]:
        """The rest of every batch a claim took part of: a batch's retry carries the same
        webhook-id, so it must carry the same events, or a receiver that deduplicates by id
        would drop the ones left behind."""
        batch_ids = list({d.batch_id for d in claimed if d.batch_id})
        if not batch_ids:
            return []
        c = t.deliveries.c
        taken = {d.id for d in claimed}
        mates = (
            sa.update(t.deliveries)
            .where(
                c.batch_id.in_(batch_ids),
                c.status.in_(RETRYABLE),
                sa.or_(c.lease_expires_at.is_(None), c.lease_expires_at < now),
            )
            .values(lease_owner=owner, lease_expires_at=now + lease_seconds)
            .returning(c.id, c.event_id, c.integration_id, c.subscription, c.attempts, c.batch_id, c.created_at)
        )
        return [d for d in (DueDelivery(*row) for row in connection.execute(mates)) if d.id not in taken]

    def _claim_statement(
        self, integration_ids: list[str], owner: str, now: float, limit: int, lease_seconds: float
    ) -> sa.Update:
        due = (
            sa.select(t.deliveries.c.id)
            .where(
                t.deliveries.c.status.in_(RETRYABLE),
                t.deliveries.c.next_attempt_at <= now,
                sa.or_(t.deliveries.c.lease_expires_at.is_(None), t.deliveries.c.lease_expires_at < now),
                t.deliveries.c.integration_id.in_(integration_ids),
                # suspended on any replica: nothing is claimed for it, even before this
                # replica has read the suspension back
                t.deliveries.c.integration_id.not_in(
                    sa.select(t.overrides.c.integration_id).where(t.overrides.c.suspended.is_(True))
                ),
            )
            .order_by(t.deliveries.c.next_attempt_at)
            .limit(limit)
        )
        due = self._lock_due(due)
        c = t.deliveries.c
        return (
            sa.update(t.deliveries)
            .where(c.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + lease_seconds)
            .returning(c.id, c.event_id, c.integration_id, c.subscription, c.attempts, c.batch_id, c.created_at)
        )

    def _lock_due(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """PostgreSQL adds FOR UPDATE SKIP LOCKED, so replicas never claim the same rows."""
        return query

    def _attach_envelopes(self, connection: sa.Connection, claimed: list[DueDelivery]) -> None:
        event_ids = list({d.event_id for d in claimed})
        envelopes: dict[str, dict[str, Any]] = {}
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        loads = json.loads
        for start in range(0, len(event_ids), IN_CHUNK):
            chunk = event_ids[start : start + IN_CHUNK]
            # driver level: the data column's text parsed here, without per-row type processing
            rows = connection.exec_driver_sql(
                f"SELECT id, event, timestamp, data FROM events WHERE id IN ({', '.join([mark] * len(chunk))})",
                tuple(chunk),
            )
            for ident, event, timestamp, data in rows:
                parsed = loads(data) if isinstance(data, str | bytes) else data  # psycopg parses json itself
                envelopes[ident] = {"id": ident, "event": event, "timestamp": timestamp, "data": parsed}
        for delivery in claimed:
            delivery.envelope = envelopes.get(delivery.event_id, {})

    def assign_batch(self, delivery_ids: Sequence[str], batch_id: str, owner: str | None = None) -> None:
        """Fix a batch's membership, so its retries keep one webhook-id and the same events;
        with an `owner`, only of deliveries whose lease it still holds (see `record`)."""
        with self._bookkeeping() as connection:
            for start in range(0, len(delivery_ids), IN_CHUNK):
                query = sa.update(t.deliveries).where(t.deliveries.c.id.in_(delivery_ids[start : start + IN_CHUNK]))
                if owner is not None:
                    query = query.where(t.deliveries.c.lease_owner == owner)
                connection.execute(query.values(batch_id=batch_id))

    def record(self, outcomes: Sequence[Outcome], owner: str | None = None) -> int:
        """Apply outcomes and append their attempts in one transaction; leases are released.
        Returns how many outcomes were applied.

        With an `owner`, an outcome only applies to a delivery whose lease that owner still
        holds (a fence): a replica declared dead while it was paused does not overwrite what a
        survivor now does with the delivery. Its attempts are recorded all the same: the
        requests were made.

        A few statements per group rather than one per row: delivered outcomes (the common
        case) are one UPDATE per chunk of ids, attempts one multi-row INSERT per chunk. With
        SQLite each statement executed is a hand-over of the GIL from the event loop's thread,
        and under load each of those waits its turn."""
        if not outcomes:
            return 0
        now = time.time()
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        fence, fenced = ("", ()) if owner is None else (f" AND lease_owner = {mark}", (owner,))
        delivered = [o for o in outcomes if o.status == "delivered"]
        others = [
            (o.status, o.attempts, o.next_attempt_at, o.error, now, None, o.delivery_id, *fenced)
            for o in outcomes
            if o.status != "delivered"
        ]
        applied = 0
        attempts = [
            (
                a.delivery_id,
                a.integration_id,
                a.at,
                a.attempt,
                a.trigger,
                a.batch_id,
                a.status_code,
                a.latency_ms,
                a.outcome,
                a.response_excerpt,
                a.error,
            )
            for a in (o.attempt for o in outcomes)
            if a is not None
        ]
        with self._bookkeeping() as connection:
            # the attempt count of a delivered row is the one its outcome carries: group by it
            by_count: dict[int, list[str]] = {}
            for o in delivered:
                by_count.setdefault(o.attempts, []).append(o.delivery_id)
            for count, ids in by_count.items():
                for start in range(0, len(ids), IN_CHUNK):
                    chunk = ids[start : start + IN_CHUNK]
                    result = connection.exec_driver_sql(
                        f"UPDATE deliveries SET status = 'delivered', attempts = {mark}, last_error = NULL, "
                        f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {mark}, delivered_at = {mark} "
                        f"WHERE id IN ({', '.join([mark] * len(chunk))}){fence}",
                        (count, now, now, *chunk, *fenced),
                    )
                    applied += result.rowcount or 0
            if others:
                result = connection.exec_driver_sql(
                    f"UPDATE deliveries SET status = {mark}, attempts = {mark}, next_attempt_at = {mark}, "
                    f"last_error = {mark}, lease_owner = NULL, lease_expires_at = NULL, updated_at = {mark}, "
                    f"delivered_at = {mark} WHERE id = {mark}{fence}",
                    others,
                )
                applied += result.rowcount or 0
            row = f"({', '.join([mark] * 11)})"
            for start in range(0, len(attempts), ATTEMPT_ROWS):
                chunk_rows = attempts[start : start + ATTEMPT_ROWS]
                connection.exec_driver_sql(
                    "INSERT INTO attempts (delivery_id, integration_id, at, attempt, trigger, batch_id, status_code, "
                    f"latency_ms, outcome, response_excerpt, error) VALUES {', '.join([row] * len(chunk_rows))}",
                    tuple(value for attempt_row in chunk_rows for value in attempt_row),
                )
        return applied

    def log_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Attempts that belong to no delivery, such as scheduled syncs (`sync:<id>`)."""
        if attempts:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(t.attempts), [dataclasses.asdict(a) for a in attempts])

    def renew_leases(self, owner: str, delivery_ids: Sequence[str], until: float) -> int:
        """Push back the expiry of leases this owner still holds on these deliveries: work
        waiting in its lanes longer than a lease (a slow endpoint, a low concurrency) must not
        be claimed a second time while it waits."""
        c = t.deliveries.c
        renewed = 0
        with self._bookkeeping() as connection:
            for start in range(0, len(delivery_ids), IN_CHUNK):
                query = (
                    sa.update(t.deliveries)
                    .where(c.lease_owner == owner, c.id.in_(list(delivery_ids[start : start + IN_CHUNK])))
                    .values(lease_expires_at=until)
                )
                renewed += connection.execute(query).rowcount or 0
        return renewed

    def release_leases(self, owner: str | None = None) -> int:
        """Give back leases (all of them when one process owns the store, at its start)."""
        query = sa.update(t.deliveries).where(t.deliveries.c.lease_owner.is_not(None))
        if owner is not None:
            query = query.where(t.deliveries.c.lease_owner == owner)
        with self.engine.begin() as connection:
            return connection.execute(query.values(lease_owner=None, lease_expires_at=None)).rowcount or 0

    def replay(
        self,
        *,
        delivery_id: str | None = None,
        integration_id: str | None = None,
        since: float | None = None,
        statuses: Sequence[str] = ("failed", "dead"),
    ) -> int:
        """Put deliveries back in the queue with a fresh attempt budget; returns how many."""
        c = t.deliveries.c
        now = time.time()
        # not a delivery being tried right now (a retry holds a lease): it would be sent twice
        held = sa.and_(c.lease_owner.is_not(None), c.lease_expires_at >= now)
        query = sa.update(t.deliveries).where(c.status.in_(list(statuses)), ~held)
        if delivery_id is not None:
            query = query.where(c.id == delivery_id)
        if integration_id is not None:
            query = query.where(c.integration_id == integration_id)
        if since is not None:
            query = query.where(c.updated_at >= since)
        with self.engine.begin() as connection:
            result = connection.execute(
                query.values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=time.time(),
                    lease_owner=None,
                    lease_expires_at=None,
                    batch_id=None,
                )
            )
            return result.rowcount or 0

    def attempts(
        self, integration_id: str | None = None, delivery_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Newest first."""
        query = sa.select(t.attempts).order_by(t.attempts.c.seq.desc()).limit(limit)
        if integration_id is not None:
            query = query.where(t.attempts.c.integration_id == integration_id)
        if delivery_id is not None:
            query = query.where(t.attempts.c.delivery_id == delivery_id)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def prune(self, before: float) -> dict[str, int]:
        """Retention: drop attempts, finished deliveries and their events older than `before`.

        Deliveries still waiting (pending, failed) and dead letters are kept whatever their age:
        nothing undelivered disappears on its own.
        """
        c = t.deliveries.c
        with self.engine.begin() as connection:
            if not self._prune_alone(connection):
                return {"events": 0, "deliveries": 0, "attempts": 0}
            attempts = connection.execute(sa.delete(t.attempts).where(t.attempts.c.at < before)).rowcount or 0
            deliveries = (
                connection.execute(
                    sa.delete(t.deliveries).where(c.status == "delivered", c.updated_at < before)
                ).rowcount
                or 0
            )
            still_needed = sa.select(c.event_id).where(c.event_id == t.events.c.id).exists()
            events = (
                connection.execute(sa.delete(t.events).where(t.events.c.created_at < before, ~still_needed)).rowcount
                or 0
            )
        return {"events": events, "deliveries": deliveries, "attempts": attempts}
