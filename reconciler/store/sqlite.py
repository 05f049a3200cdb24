"""The embedded store: SQLite in WAL mode, created on first use (default ./state/reconciler.db)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert

from reconciler.store.base import Store
from reconciler.store.errors import StoreError
from reconciler.store.outbox import IN_CHUNK
from reconciler.store.records import DueDelivery

BUSY_TIMEOUT_MS = 10_000  # a second process (the CLI, a test) may hold the write lock briefly
# A claimed delivery's envelope as the text it is sent as, its data as stored: a string in the
# claim's JSON, not parsed on the way, since most deliveries never need its fields.
_ENVELOPE_TEXT = (
    """'{"id":' || json_quote(e.id) || ',"event":' || json_quote(e.event) """
    """|| ',"timestamp":' || json_quote(e.timestamp) || ',"data":' || e.data || '}'"""
)


def _create_private(path: Path) -> None:
    """Create the store's directory (0700) and file (0600) if they are missing: the store holds
    events and audit entries, which other local users may not read or forge. SQLite gives its
    -wal and -shm files the mode of the database file. What exists already is left as it is."""
    if not path.parent.exists():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


class SQLiteStore(Store):
    """The embedded store: SQLite in WAL mode, one daemon per file."""

    dialect = "sqlite"
    _insert = staticmethod(insert)  # the dialect's INSERT ... ON CONFLICT
    _last_expiry = 0.0  # the lease expiry of the latest claim: each claim's is its own
    _expiry_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else ""
        if not path:
            raise StoreError(
                f"{url!r} names no file: use sqlite:///state/reconciler.db (relative) "
                "or sqlite:////var/lib/reconciler/state.db (absolute)"
            )
        if path != ":memory:":
            try:
                _create_private(Path(path))
            except OSError as exc:
                raise StoreError(f"cannot create {path} or its directory: {exc.strerror}") from None
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _configure)
        return cls(url, engine)

    @contextlib.contextmanager
    def _bookkeeping(self) -> Iterator[sa.Connection]:
        # synchronous=NORMAL for this transaction only: in WAL mode it survives a crash of the
        # process, and the next FULL commit (an intake) syncs it to disk with everything before it
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
            connection.commit()  # ends SQLAlchemy's autobegun transaction around the pragma
            try:
                with connection.begin():
                    yield connection
            finally:
                connection.exec_driver_sql("PRAGMA synchronous=FULL")
                connection.commit()

    def claim(
        self, owner: str, integration_ids: Iterable[str], now: float, limit: int, lease_seconds: float
    ) -> list[DueDelivery]:
        """Lease up to `limit` due deliveries, as Outbox.claim, in two statements that each
        return one row: Python's sqlite3 gives up the GIL around every row it steps through,
        and under load each of those waits for the event loop thread, so a claim read row by
        row took ten times longer than its work."""
        ids = list(integration_ids)
        if not ids or len(ids) > IN_CHUNK:
            return super().claim(owner, ids, now, limit, lease_seconds)
        with self._expiry_lock:
            # the claimed rows are found again by owner and expiry: two claims never share one
            expires = max(now + lease_seconds, math.nextafter(self._last_expiry, math.inf))
            self._last_expiry = expires
        marks = ", ".join("?" * len(ids))
        with self._bookkeeping() as connection:
            connection.exec_driver_sql(
                "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id IN ("
                "SELECT id FROM deliveries WHERE status IN ('pending', 'failed') AND next_attempt_at <= ? "
                "AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
                f"AND integration_id IN ({marks}) ORDER BY next_attempt_at LIMIT ?)",
                (owner, expires, now, now, *ids, limit),
            )
            # a batch is claimed whole: its retry carries the same webhook-id, so it must carry the
            # same events, or a receiver that deduplicates by id would drop the ones left behind
            connection.exec_driver_sql(
                "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE batch_id IN ("
                "SELECT batch_id FROM deliveries WHERE lease_owner = ? AND lease_expires_at = ? "
                "AND batch_id IS NOT NULL) AND status IN ('pending', 'failed') "
                "AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
                (owner, expires, owner, expires, now),
            )
            packed = connection.exec_driver_sql(
                "SELECT json_group_array(json_array(d.id, d.event_id, d.integration_id, d.subscription, "
                f"d.attempts, d.batch_id, d.created_at, {_ENVELOPE_TEXT})) "
                "FROM deliveries d JOIN events e ON e.id = d.event_id "
                # the integrations too: the engine's claims of one round share owner and expiry
                f"WHERE d.lease_owner = ? AND d.lease_expires_at = ? AND d.integration_id IN ({marks})",
                (owner, expires, *ids),
            ).scalar()
        claimed = [_due(*row) for row in json.loads(packed or "[]")]
        claimed.sort(key=lambda d: d.created_at)
        return claimed


def _due(
    ident: str,
    event_id: str,
    integration_id: str,
    subscription: int,
    attempts: int,
    batch_id: str | None,
    created_at: float,
    envelope: str,
) -> DueDelivery:
    """A claimed row, with its envelope as the text it is sent as."""
    return DueDelivery(
        ident, event_id, integration_id, subscription, attempts, batch_id, created_at, None, envelope.encode()
    )


def _configure(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=FULL: a commit is on disk before it is
    # acknowledged (the outbox promises nothing is lost once an event is accepted).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()
