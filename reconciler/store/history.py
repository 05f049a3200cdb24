"""Reads of what happened: an integration's log, its deliveries page by page, success rates.

The log merges four sources, newest first: delivery attempts (and test sends), scheduled sync
fetches, reconcile and operator actions (the audit trail), and inbound receipts (events whose
source is `inbound:<id>`). Pages are cut by an opaque cursor that encodes the position of the
last entry returned, so a page never repeats or skips an entry, even when new ones arrive.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from reconciler.store import schema as t
from reconciler.store.records import LastAttempt, RecentOutcomes

LOG_KINDS = ("attempt", "test", "sync", "reconcile", "receipt")
DELIVERY_STATUSES = ("pending", "failed", "delivered", "dead")
SERIES_ROWS = 200_000  # attempts an attempt_series reads at most


class BadCursor(ValueError):
    """A cursor this store did not hand out."""


@dataclass(frozen=True, order=True)
class Position:
    """Where an entry sits in the newest-first order: later `at` first, then the larger key."""

    at: float
    rank: int  # the source, to order entries with the same time
    key: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.at!r}|{self.rank}|{self.key}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            at, rank, key = raw.split("|", 2)
            position = cls(float(at), int(rank), key)
            if position.rank in (RANK_AUDIT, RANK_ATTEMPT) and not -(2**63) <= int(position.key) < 2**63:
                raise ValueError("not a row number")  # a database integer, or the query fails
            return position
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise BadCursor("the cursor is not one this API returned; start again without it") from exc


@dataclass(frozen=True)
class LogFilter:
    """Which log entries a page or a follower wants: kinds, status, event type, since when."""

    kinds: Sequence[str] = LOG_KINDS
    status: str | None = None
    event: str | None = None
    since: float | None = None


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# the order of sources among entries with the same time
RANK_RECEIPT, RANK_AUDIT, RANK_ATTEMPT = 1, 2, 3


@dataclass(frozen=True)
class _Window:
    """The positions a query may return: strictly between `start` and `end`, not before `since`."""

    end: Position | None
    start: Position | None
    since: float | None

    def conditions(
        self, at: sa.ColumnElement[Any], key: sa.ColumnElement[Any], rank: int, cast: type[int] | type[str]
    ) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.since:
            found.append(at >= self.since)
        if self.end is not None:
            if rank < self.end.rank:
                found.append(at <= self.end.at)
            elif rank > self.end.rank:
                found.append(at < self.end.at)
            else:
                found.append(sa.or_(at < self.end.at, sa.and_(at == self.end.at, key < cast(self.end.key))))
        if self.start is not None:
            if rank > self.start.rank:
                found.append(at >= self.start.at)
            elif rank < self.start.rank:
                found.append(at > self.start.at)
            else:
                found.append(sa.or_(at > self.start.at, sa.and_(at == self.start.at, key > cast(self.start.key))))
        return found


def queue_totals(per_integration: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole queue from queue_by_integration()'s figures."""
    queues = per_integration.values()
    return {
        "depth": sum(q["depth"] for q in queues),
        "oldestPendingSeconds": max((q["oldestPendingSeconds"] for q in queues), default=0.0),
        "dead": sum(q["dead"] for q in queues),
    }


class History:
    """Mixed into the Store: needs `self.engine`."""

    engine: sa.Engine

    # --- the log ------------------------------------------------------------------------------------

    def log_page(
        self, integration_id: str, where: LogFilter, *, before: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the log, newest first, and the cursor of the next page (None at the end)."""
        end = Position.decode(before) if before else None
        entries = self._log_entries(integration_id, where, end, None, limit + 1)
        page = entries[:limit]
        return page, (page[-1]["cursor"] if len(entries) > limit else None)

    def log_after(
        self, integration_id: str, where: LogFilter, after: str | None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Entries newer than the cursor, oldest first: what a follower has not seen yet."""
        start = Position.decode(after) if after else None
        entries = self._log_entries(integration_id, where, None, start, None)
        entries.reverse()
        return entries[:limit]

    def latest_log_cursor(self, integration_id: str, where: LogFilter) -> str | None:
        newest = self._log_entries(integration_id, where, None, None, 1)
        return newest[0]["cursor"] if newest else None

    def _log_entries(
        self,
        integration_id: str,
        where: LogFilter,
        end: Position | None,
        start: Position | None,
        limit: int | None,
    ) -> list[dict[str, Any]]:
        """Entries strictly before `end` and strictly after `start`, newest first, at most `limit`."""
        window = _Window(end, start, where.since)
        found: list[tuple[Position, dict[str, Any]]] = []
        with self.engine.connect() as connection:
            if {"attempt", "test", "sync"} & set(where.kinds):
                found += self._attempt_entries(connection, integration_id, where, window, limit)
            if "reconcile" in where.kinds and where.event is None:
                found += self._audit_entries(connection, integration_id, where, window, limit)
            if "receipt" in where.kinds:
                found += self._receipt_entries(connection, integration_id, where, window, limit)
        found.sort(key=lambda item: item[0], reverse=True)
        if limit is not None:
            found = found[:limit]
        return [{"cursor": position.encode(), **entry} for position, entry in found]

    def _attempt_entries(
        self,
        connection: sa.Connection,
        integration_id: str,
        where: LogFilter,
        window: _Window,
        limit: int | None,
    ) -> list[tuple[Position, dict[str, Any]]]:
        a, d, e = t.attempts.c, t.deliveries.c, t.events.c
        query = (
            sa.select(t.attempts, d.event_id, e.event)
            .select_from(
                t.attempts.outerjoin(t.deliveries, d.id == a.delivery_id).outerjoin(t.events, e.id == d.event_id)
            )
            .where(a.integration_id == integration_id, *window.conditions(a.at, a.seq, RANK_ATTEMPT, int))
            .order_by(a.at.desc(), a.seq.desc())
        )
        # a takeover is listed with the attempts (the resend it announces follows it), though it
        # is not a send: success rates and the latest send leave it out
        triggers = {"attempt": ("scheduled", "replay", "takeover"), "test": ("test",), "sync": ("sync",)}
        wanted = [trigger for kind in where.kinds for trigger in triggers.get(kind, ())]
        query = query.where(a.trigger.in_(wanted))
        if where.status:
            query = query.where(a.outcome == where.status)
        if where.event:
            query = query.where(e.event == where.event)
        if limit is not None:
            query = query.limit(limit)
        entries = []
        for row in connection.execute(query).mappings():
            kind = {"sync": "sync", "test": "test"}.get(row["trigger"], "attempt")
            entries.append(
                (
                    Position(row["at"], RANK_ATTEMPT, f"{row['seq']:020d}"),
                    {
                        "kind": kind,
                        "at": iso(row["at"]),
                        "status": row["outcome"],
                        "event": row["event"],
                        "eventId": row["event_id"],
                        "deliveryId": row["delivery_id"] if kind == "attempt" else None,
                        "attempt": row["attempt"],
                        "trigger": row["trigger"],
                        "batchId": row["batch_id"],
                        "statusCode": row["status_code"],
                        "latencyMs": row["latency_ms"],
                        "responseExcerpt": row["response_excerpt"],
                        "error": row["error"],
                    },
                )
            )
        return entries

    def _audit_entries(
        self,
        connection: sa.Connection,
        integration_id: str,
        where: LogFilter,
        window: _Window,
        limit: int | None,
    ) -> list[tuple[Position, dict[str, Any]]]:
        c = t.audit.c
        query = (
            sa.select(t.audit)
            .where(c.integration_id == integration_id, *window.conditions(c.at, c.seq, RANK_AUDIT, int))
            .order_by(c.at.desc(), c.seq.desc())
        )
        if where.status:
            query = query.where(c.action == where.status)
        if limit is not None:
            query = query.limit(limit)
        return [
            (
                Position(row["at"], RANK_AUDIT, f"{row['seq']:020d}"),
                {
                    "kind": "reconcile",
                    "at": iso(row["at"]),
                    "status": row["action"],
                    "actor": row["actor"],
                    "message": row["message"],
                    "generation": row["generation"],
                    "revision": row["revision"],
                },
            )
            for row in connection.execute(query).mappings()
        ]

    def _receipt_entries(
        self,
        connection: sa.Connection,
        integration_id: str,
        where: LogFilter,
        window: _Window,
        limit: int | None,
    ) -> list[tuple[Position, dict[str, Any]]]:
        if where.status not in (None, "received"):
            return []
        c = t.events.c
        query = (
            sa.select(c.id, c.event, c.created_at)
            .where(c.source == f"inbound:{integration_id}", *window.conditions(c.created_at, c.id, RANK_RECEIPT, str))
            .order_by(c.created_at.desc(), c.id.desc())
        )
        if where.event:
            query = query.where(c.event == where.event)
        if limit is not None:
            query = query.limit(limit)
        return [
            (
                Position(row["created_at"], RANK_RECEIPT, row["id"]),
                {
                    "kind": "receipt",
                    "at": iso(row["created_at"]),
                    "status": "received",
                    "event": row["event"],
                    "eventId": row["id"],
                },
            )
            for row in connection.execute(query).mappings()
        ]

    # --- deliveries -----------------------------------------------------------------------------

    def delivery_page(
        self, integration_id: str, statuses: Sequence[str], *, before: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Deliveries newest first, and the cursor of the next page."""
        c, e = t.deliveries.c, t.events.c
        end = Position.decode(before) if before else None
        query = (
            sa.select(
                c.id,
                c.event_id,
                c.status,
                c.attempts,
                c.next_attempt_at,
                c.last_error,
                c.created_at,
                c.updated_at,
                c.delivered_at,
                c.batch_id,
                e.event,
            )
            .join(t.events, e.id == c.event_id)
            .where(c.integration_id == integration_id, c.status.in_(list(statuses)))
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit + 1)
        )
        if end is not None:
            query = query.where(sa.or_(c.created_at < end.at, sa.and_(c.created_at == end.at, c.id < end.key)))
        with self.engine.connect() as connection:
            rows = list(connection.execute(query).mappings())
        items = [
            {
                "id": row["id"],
                "eventId": row["event_id"],
                "event": row["event"],
                "status": row["status"],
                "attempts": row["attempts"],
                "nextAttemptAt": iso(row["next_attempt_at"]) if row["status"] in ("pending", "failed") else None,
                "lastError": row["last_error"],
                "batchId": row["batch_id"],
                "createdAt": iso(row["created_at"]),
                "updatedAt": iso(row["updated_at"]),
                "deliveredAt": iso(row["delivered_at"]),
                "cursor": Position(row["created_at"], 0, row["id"]).encode(),
            }
            for row in rows[:limit]
        ]
        return items, (items[-1]["cursor"] if len(rows) > limit else None)

    def delivery_attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Delivery id -> its attempts, oldest first: what each try of a delivery answered."""
        a = t.attempts.c
        found: dict[str, list[dict[str, Any]]] = {delivery_id: [] for delivery_id in delivery_ids}
        if not delivery_ids:
            return found
        query = sa.select(t.attempts).where(a.delivery_id.in_(list(delivery_ids))).order_by(a.at, a.seq)
        with self.engine.connect() as connection:
            for row in connection.execute(query).mappings():
                found[row["delivery_id"]].append(
                    {
                        "at": iso(row["at"]),
                        "attempt": row["attempt"],
                        "trigger": row["trigger"],
                        "status": row["outcome"],
                        "statusCode": row["status_code"],
                        "latencyMs": row["latency_ms"],
                        "error": row["error"],
                    }
                )
        return found

    def delivery_integration(self, delivery_id: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(t.deliveries.c.integration_id).where(t.deliveries.c.id == delivery_id)
            ).scalar()

    # --- health ---------------------------------------------------------------------------------

    def attempt_outcomes(self, since: float) -> dict[str, dict[str, int]]:
        """Integration id -> outcome -> attempts since then (scheduled and replayed sends)."""
        a = t.attempts.c
        query = (
            sa.select(a.integration_id, a.outcome, sa.func.count())
            .where(a.at >= since, a.trigger.in_(("scheduled", "replay")))
            .group_by(a.integration_id, a.outcome)
        )
        found: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for integration_id, outcome, count in connection.execute(query):
                found.setdefault(integration_id, {})[outcome] = count
        return found

    def recent_outcomes(self, since: float) -> dict[str, RecentOutcomes]:
        """Integration id -> what its attempts since then measured: sends by outcome, the latest
        send and the latest sync fetch (test sends are left out: an operator's probe says
        nothing about the traffic), and its deliveries that went dead since then and still are."""
        sends = self.attempt_outcomes(since)
        last = self.latest_attempts(since)
        d = t.deliveries.c
        # dead letters of the window still dead: a replayed one no longer counts
        dead_query = (
            sa.select(d.integration_id, sa.func.count())
            .where(d.status == "dead", d.updated_at >= since)
            .group_by(d.integration_id)
        )
        with self.engine.connect() as connection:
            dead: dict[str, int] = {integration_id: count for integration_id, count in connection.execute(dead_query)}
        ids = set(sends) | {integration_id for integration_id, _ in last} | set(dead)
        return {
            integration_id: RecentOutcomes(
                sends=sends.get(integration_id, {}),
                last_send=last.get((integration_id, False)),
                last_sync=last.get((integration_id, True)),
                dead_letters=dead.get(integration_id, 0),
            )
            for integration_id in ids
        }

    def latest_attempts(self, since: float) -> dict[tuple[str, bool], LastAttempt]:
        """(integration id, is a sync fetch) -> its latest send or sync attempt since then."""
        a = t.attempts.c
        is_sync = sa.case((a.trigger == "sync", 1), else_=0)
        latest = (
            sa.select(sa.func.max(a.seq))
            .where(a.at >= since, a.trigger.in_(("scheduled", "replay", "sync")))
            .group_by(a.integration_id, is_sync)
        )
        query = sa.select(a.integration_id, a.trigger, a.outcome, a.at, a.status_code, a.error).where(
            a.seq.in_(latest.scalar_subquery())
        )
        with self.engine.connect() as connection:
            return {
                (integration_id, trigger == "sync"): LastAttempt(
                    outcome=outcome, at=at, status_code=status_code, error=error
                )
                for integration_id, trigger, outcome, at, status_code, error in connection.execute(query)
            }

    def attempt_series(
        self, integration_id: str, since: float, until: float, step: float = 60.0
    ) -> list[dict[str, Any]]:
        """The integration's sends (scheduled and replayed) from `since` to `until` in steps of
        `step` seconds, every step present: its start, sends delivered and not, and the mean and
        highest latency. Reads at most SERIES_ROWS attempts, the newest: a plot, not an audit."""
        a = t.attempts.c
        query = (
            sa.select(a.at, a.outcome, a.latency_ms)
            .where(
                a.integration_id == integration_id,
                a.at >= since,
                a.at < until,
                a.trigger.in_(("scheduled", "replay")),
            )
            .order_by(a.at.desc())
            .limit(SERIES_ROWS)
        )
        start = since - since % step
        steps = max(1, int((until - start) // step) + 1)
        delivered, failed = [0] * steps, [0] * steps
        latencies: list[list[float]] = [[] for _ in range(steps)]
        with self.engine.connect() as connection:
            for at, outcome, latency in connection.execute(query):
                i = min(steps - 1, int((at - start) // step))
                if outcome == "delivered":
                    delivered[i] += 1
                else:
                    failed[i] += 1
                if latency is not None:
                    latencies[i].append(latency)
        return [
            {
                "at": start + i * step,
                "delivered": delivered[i],
                "failed": failed[i],
                "latencyMs": round(sum(latencies[i]) / len(latencies[i]), 2) if latencies[i] else None,
                "latencyMaxMs": round(max(latencies[i]), 2) if latencies[i] else None,
            }
            for i in range(steps)
        ]

    def queue_stats(self, now: float | None = None) -> dict[str, Any]:
        """Deliveries waiting (pending or failed), the oldest one's age, and dead letters."""
        return queue_totals(self.queue_by_integration(now))

    def queue_by_integration(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Integration id -> waiting deliveries, the oldest one's age, dead letters."""
        now = time.time() if now is None else now
        c = t.deliveries.c
        waiting = (
            sa.select(c.integration_id, sa.func.count(), sa.func.min(c.created_at))
            .where(c.status.in_(("pending", "failed")))
            .group_by(c.integration_id)
        )
        dead = sa.select(c.integration_id, sa.func.count()).where(c.status == "dead").group_by(c.integration_id)
        found: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as connection:
            for integration_id, count, oldest in connection.execute(waiting):
                found[integration_id] = {
                    "depth": count,
                    "oldestPendingSeconds": round(now - oldest, 3),
                    "dead": 0,
                }
            for integration_id, count in connection.execute(dead):
                found.setdefault(integration_id, {"depth": 0, "oldestPendingSeconds": 0.0, "dead": 0})["dead"] = count
        return found
