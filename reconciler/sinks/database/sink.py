"""DatabaseSink: the RecordSink of `database` integrations.

A write is one transaction (an executemany of the batch): all of its rows or none, so a retry
writes them again; upsert keyed by event id makes that idempotent. The blocking work (reflect,
convert, execute) runs on the engines' threads; this module turns its outcome into a SinkResult.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from reconciler.registry import AppliedIntegration
from reconciler.sinks import RecordSink, SinkResult
from reconciler.sinks.database.engines import WORKERS, Engines
from reconciler.sinks.database.errors import Mismatch, translate
from reconciler.sinks.database.rows import to_rows
from reconciler.sinks.database.table import prepare
from reconciler.sinks.database.target import Target


class DatabaseSink(RecordSink):
    """Rows into PostgreSQL, MySQL/MariaDB or SQLite; registered for `type: database`."""

    def __init__(self, workers: int = WORKERS, store_url: str | None = None) -> None:
        self.workers = workers
        self._engines = Engines(workers, store_url)

    # --- the RecordSink protocol --------------------------------------------------------------

    async def write(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], message_id: str
    ) -> SinkResult:
        started = time.perf_counter()
        try:
            target = await self._engines.target(integration)
        except Mismatch as problem:
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        if target.one_at_a_time:
            async with target.order:
                return await self._engines.run(_write, target, envelopes)
        return await self._engines.run(_write, target, envelopes)

    async def check(self, integration: AppliedIntegration) -> SinkResult:
        started = time.perf_counter()
        try:
            target = await self._engines.target(integration)
        except Mismatch as problem:
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        return await self._engines.run(_check, target, started)

    async def close(self) -> None:
        await self._engines.close()


# --- in a worker thread -----------------------------------------------------------------------


def _write(target: Target, envelopes: list[dict[str, Any]]) -> SinkResult:
    started = time.perf_counter()
    try:
        prepared = prepare(target, create=True)
        assert prepared is not None  # created when missing
        _, statement = prepared
        rows = to_rows(target, envelopes)
        with target.engine.begin() as connection:
            connection.execute(statement, rows)
    except Mismatch as problem:
        target.forget()
        return SinkResult.failure(problem.message, started, endpoint_failure=False)
    except sa.exc.SQLAlchemyError as exc:
        message, unavailable = translate(exc, target)
        if not unavailable:
            target.forget()
        return SinkResult.failure(message, started, endpoint_failure=unavailable)
    verb = "upserted into" if target.config.mode == "upsert" else "appended to"
    excerpt = f"{len(rows)} row{'s' if len(rows) != 1 else ''} {verb} {target.name}"
    return SinkResult.success(excerpt, started)


def _check(target: Target, started: float) -> SinkResult:
    """Connect, find the table and its columns; never write (not even a new SQLite file)."""
    target.forget()  # look at the table as it is now
    try:
        if target.database_file is not None and not target.database_file.exists():
            if target.config.createTable:
                return SinkResult.success(
                    f"the SQLite database does not exist yet; the first write creates it and table {target.name}",
                    started,
                )
            raise Mismatch(f"the SQLite database of table {target.name} does not exist; check config.url")
        prepared = prepare(target, create=False)
    except Mismatch as problem:
        return SinkResult.failure(problem.message, started, endpoint_failure=False)
    except sa.exc.SQLAlchemyError as exc:
        message, unavailable = translate(exc, target)
        return SinkResult.failure(message, started, endpoint_failure=unavailable)
    if prepared is None:
        excerpt = f"connected; table {target.name} does not exist yet: the first write creates it"
        return SinkResult.success(excerpt, started)
    columns = ", ".join(target.columns)
    return SinkResult.success(f"connected; table {target.name} has the mapped columns ({columns})", started)
