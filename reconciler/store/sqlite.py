"""The embedded store: SQLite in WAL mode, created on first use (default ./state/reconciler.db)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert

from reconciler.store.base import Store, StoreError

BUSY_TIMEOUT_MS = 10_000  # a second process (the CLI, a test) may hold the write lock briefly


class SQLiteStore(Store):
    dialect = "sqlite"
    _insert = staticmethod(insert)  # the dialect's INSERT ... ON CONFLICT

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
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory for {path}: {exc.strerror}") from None
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


def _configure(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=FULL: a commit is on disk before it is
    # acknowledged (the outbox promises nothing is lost once an event is accepted).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()
