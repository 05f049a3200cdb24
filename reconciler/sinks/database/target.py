"""One applied database integration's target: its engine, and what was learned about its table.

The engine comes from engines.py; the table, its column converters and the statement that
writes it are filled in by table.py on the first write (or check) and forgotten when the table
turns out not to fit, so that the next write looks at it again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reconciler.manifests.models import DatabaseConfig

DEFAULT_MAPPING = {"event_id": "id", "event": "event", "timestamp": "timestamp", "data": "data"}


@dataclass
class Target:
    """One engine (per integration id, generation and resolved URL) and its table, once prepared."""

    key: tuple[str, int, str]
    engine: sa.Engine
    config: DatabaseConfig
    dialect: str  # postgresql | mysql | sqlite
    secrets: tuple[str, ...]  # resolved values kept out of messages
    database_file: Path | None = None  # SQLite: the file, which check() must not create
    lock: threading.Lock = field(default_factory=threading.Lock)  # one reflection at a time
    order: asyncio.Lock = field(default_factory=asyncio.Lock)  # upserts of one integration, in order
    table: sa.Table | None = None
    columns: dict[str, str] = field(default_factory=dict)  # table column -> event field
    converters: list[tuple[str, Callable[[dict[str, Any]], Any]]] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)  # config.key by the table's own column names
    statement: Any = None

    @property
    def name(self) -> str:
        schema = self.config.tableSchema
        return f"{schema}.{self.config.table}" if schema else self.config.table

    @property
    def one_at_a_time(self) -> bool:
        """Upserts go one batch at a time, in order (the last event for a key wins), unless each
        event has its own row in PostgreSQL or SQLite. MySQL's upserts take gap locks that make
        concurrent batches deadlock, so they always go one at a time."""
        if self.config.mode != "upsert":
            return False
        mapping = self.config.mapping or DEFAULT_MAPPING
        per_event = any(mapping.get(k) == "id" for k in self.config.key or [])
        return self.dialect == "mysql" or not per_event

    def forget(self) -> None:
        """Reflect again on the next write: the table may have been fixed meanwhile."""
        with self.lock:
            self.table, self.statement, self.columns, self.converters, self.key_columns = None, None, {}, [], []
