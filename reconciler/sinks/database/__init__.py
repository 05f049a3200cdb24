"""The database sink of `database` integrations, on SQLAlchemy 2 Core.

One engine per applied integration (its id, generation and resolved URL), replaced and
disposed when any of them changes. The target table is reflected once per engine (or
created from the mapping with `createTable: true`) and checked against the mapping: a
missing column, a key without a unique index or a value of the wrong type is a delivery
error naming the table and the column, never the URL or the row's values. A write is one
transaction (an executemany of the batch): all of its rows or none, so a retry writes them
again; upsert (each dialect's own) keyed by event id makes that idempotent.

The modules, each one concern:
- target.py: one integration's engine and what was learned about its table
- engines.py: making, caching and disposing engines; the sink's own worker threads
- table.py: reflecting or creating the table, checking it, the INSERT/upsert statement
- rows.py: envelopes to rows, each value converted to its column's type
- errors.py: Mismatch, and database errors translated and classified
- sink.py: DatabaseSink, the RecordSink these make up
"""

from __future__ import annotations

from reconciler.sinks.database.errors import Mismatch
from reconciler.sinks.database.sink import DatabaseSink
from reconciler.sinks.database.target import DEFAULT_MAPPING

__all__ = ["DEFAULT_MAPPING", "DatabaseSink", "Mismatch"]
