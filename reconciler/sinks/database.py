"""The database sink of `database` integrations, on SQLAlchemy 2 Core.

One engine per applied integration (its id, generation and resolved URL), replaced and
disposed when any of them changes. The target table is reflected once per engine (or
created from the mapping with `createTable: true`) and checked against the mapping: a
missing column, a key without a unique index or a value of the wrong type is a delivery
error naming the table and the column, never the URL or the row's values. A write is one
transaction (an executemany of the batch): all of its rows or none, so a retry writes them
again; upsert (each dialect's own) keyed by event id makes that idempotent.

The drivers are blocking, so writes run on a small thread pool of the sink's own: a target
that hangs until its timeout occupies those threads, never the ones the store uses.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import DatabaseConfig
from reconciler.registry import AppliedIntegration, substitute
from reconciler.sinks import RecordSink, SinkResult, config_of

DEFAULT_MAPPING = {"event_id": "id", "event": "event", "timestamp": "timestamp", "data": "data"}
KEY_LENGTH = 255  # a string key column is VARCHAR(255): MySQL cannot index unbounded text
WORKERS = 8  # threads for all database integrations of one process
POOL_SIZE = 4
POOL_OVERFLOW = 4
MESSAGE_LIMIT = 300

DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    "sqlite": "sqlite",
}

# MySQL/MariaDB server errors that say the server is unavailable rather than that our rows or
# config are wrong (client errors, 2000 and up, are always the connection's).
_MYSQL_UNAVAILABLE = {1040, 1044, 1045, 1049, 1053, 1152, 1205, 1213, 1927, 1969, 3024}
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only", "full")
# values quoted in database messages: PostgreSQL `...: "value"`, MySQL `value: 'value'`
_PG_VALUE = re.compile(r':\s*"(?:[^"]|"")*"\s*$')
_MYSQL_VALUE = re.compile(r"value: '(?:[^']|'')*'")

T = TypeVar("T")


class Mismatch(Exception):
    """The table does not fit the config or a value does not fit its column: our side to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Target:
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


class DatabaseSink(RecordSink):
    """Rows into PostgreSQL, MySQL/MariaDB or SQLite; registered for `type: database`."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._targets: dict[str, _Target] = {}
        self._executor: ThreadPoolExecutor | None = None

    # --- the RecordSink protocol --------------------------------------------------------------

    async def write(
        self, integration: AppliedIntegration, envelopes: list[dict[str, Any]], message_id: str
    ) -> SinkResult:
        started = time.perf_counter()
        try:
            target = await self._target(integration)
        except Mismatch as problem:
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        if target.one_at_a_time:
            async with target.order:
                return await self._run(self._write, target, envelopes)
        return await self._run(self._write, target, envelopes)

    async def check(self, integration: AppliedIntegration) -> SinkResult:
        started = time.perf_counter()
        try:
            target = await self._target(integration)
        except Mismatch as problem:
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        return await self._run(self._check, target, started)

    async def close(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        for target in targets:
            await loop.run_in_executor(executor, target.engine.dispose)
        executor.shutdown(wait=False)

    # --- engines ------------------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="database-sink")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _target(self, integration: AppliedIntegration) -> _Target:
        config = config_of(integration, DatabaseConfig)
        url = substitute(config.url, integration.resolved)
        key = (integration.id, integration.generation, url)
        current = self._targets.get(integration.id)
        if current is not None and current.key == key:
            return current
        secrets = tuple(v for v in (integration.resolved.values.values() if integration.resolved else ()) if v)
        target = _new_target(key, config, url, secrets)
        self._targets[integration.id] = target
        if current is not None:
            await self._run(current.engine.dispose)
        return target

    # --- in a worker thread -------------------------------------------------------------------

    def _write(self, target: _Target, envelopes: list[dict[str, Any]]) -> SinkResult:
        started = time.perf_counter()
        try:
            prepared = _prepare(target, create=True)
            assert prepared is not None  # created when missing
            _, statement = prepared
            rows = _rows(target, envelopes)
            with target.engine.begin() as connection:
                connection.execute(statement, rows)
        except Mismatch as problem:
            target.forget()
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        except sa.exc.SQLAlchemyError as exc:
            message, unavailable = _translate(exc, target)
            if not unavailable:
                target.forget()
            return SinkResult.failure(message, started, endpoint_failure=unavailable)
        verb = "upserted into" if target.config.mode == "upsert" else "appended to"
        excerpt = f"{len(rows)} row{'s' if len(rows) != 1 else ''} {verb} {target.name}"
        return SinkResult.success(excerpt, started)

    def _check(self, target: _Target, started: float) -> SinkResult:
        """Connect, find the table and its columns; never write (not even a new SQLite file)."""
        target.forget()  # look at the table as it is now
        try:
            if target.database_file is not None and not target.database_file.exists():
                if target.config.createTable:
                    return _ok(
                        started,
                        f"the SQLite database does not exist yet; the first write creates it and table {target.name}",
                    )
                raise Mismatch(f"the SQLite database of table {target.name} does not exist; check config.url")
            prepared = _prepare(target, create=False)
        except Mismatch as problem:
            return SinkResult.failure(problem.message, started, endpoint_failure=False)
        except sa.exc.SQLAlchemyError as exc:
            message, unavailable = _translate(exc, target)
            return SinkResult.failure(message, started, endpoint_failure=unavailable)
        if prepared is None:
            return _ok(started, f"connected; table {target.name} does not exist yet: the first write creates it")
        columns = ", ".join(target.columns)
        return _ok(started, f"connected; table {target.name} has the mapped columns ({columns})")


def _ok(started: float, excerpt: str) -> SinkResult:
    return SinkResult.success(excerpt, started)


def _new_target(key: tuple[str, int, str], config: DatabaseConfig, url: str, secrets: tuple[str, ...]) -> _Target:
    scheme, sep, rest = url.partition("://")
    driver = DRIVERS.get(scheme.lower())
    if not sep or driver is None:
        raise Mismatch(f"config.url (resolved) must start with one of {', '.join(sorted(DRIVERS))}://")
    try:
        parsed: URL = make_url(f"{driver}://{rest}")
    except sa.exc.ArgumentError:
        raise Mismatch("config.url (resolved) is not a database URL: check its form") from None
    timeout = parse_duration(config.timeout)
    whole = max(1, math.ceil(timeout))
    dialect = parsed.get_backend_name()
    dialect = "mysql" if dialect in ("mysql", "mariadb") else dialect
    options: dict[str, Any] = {"pool_pre_ping": True}
    database_file = None
    if dialect == "postgresql":
        # tcp_user_timeout: a peer that vanished without closing is noticed within the timeout
        connect_args: dict[str, Any] = {"connect_timeout": whole, "tcp_user_timeout": int(timeout * 1000)}
    elif dialect == "mysql":
        connect_args = {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    else:
        connect_args = {"timeout": timeout}
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            database_file = Path(parsed.database)
    if dialect != "sqlite" or database_file is not None:
        options.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_timeout=timeout)
    engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    if dialect == "postgresql":
        _statement_timeout(engine, int(timeout * 1000))
    return _Target(key, engine, config, dialect, secrets, database_file)


def _statement_timeout(engine: sa.Engine, milliseconds: int) -> None:
    """Every new PostgreSQL session gets the timeout, outside any transaction so it stays."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {int(milliseconds)}")
        dbapi_connection.autocommit = autocommit

    sa.event.listen(engine, "connect", on_connect)


# --- the table --------------------------------------------------------------------------------


def _prepare(target: _Target, create: bool) -> tuple[sa.Table, Any] | None:
    """The table (reflected or created) and the statement that writes it, cached per engine.

    With create=False (the check) a missing table that createTable would create gives None."""
    with target.lock:
        if target.table is not None:
            return target.table, target.statement
        config = target.config
        mapping = dict(config.mapping or DEFAULT_MAPPING)
        with target.engine.connect() as connection:
            exists = sa.inspect(connection).has_table(config.table, schema=config.tableSchema)
            if not exists and not config.createTable:
                raise Mismatch(
                    f"table {target.name} does not exist; create it, or set config.createTable: true "
                    "to have it created from the mapping"
                )
            if not exists and not create:
                return None
            if exists:
                table = sa.Table(config.table, sa.MetaData(), schema=config.tableSchema, autoload_with=connection)
            else:
                table = _define(config, mapping)
        if not exists:
            with target.engine.begin() as connection:
                table.create(connection, checkfirst=True)
        columns = _match_columns(target, table, mapping)
        _require_unique_key(target, table, columns)
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                column.type.none_as_null = True  # a missing field is SQL NULL, not JSON null
        lowered = {c.lower(): c for c in columns}
        target.key_columns = [lowered.get(k.lower(), k) for k in config.key or []]
        target.converters = [(c, _converter(target, table.c[c], path)) for c, path in columns.items()]
        target.table, target.columns = table, columns
        target.statement = _statement(target, table, columns)
        return table, target.statement


def _define(config: DatabaseConfig, mapping: dict[str, str]) -> sa.Table:
    """A table for the mapping: see docs/decisions.md ("Types of created tables")."""
    keys = set(config.key or [])
    columns = [
        sa.Column(name, _column_type(path, name in keys), primary_key=name in keys) for name, path in mapping.items()
    ]
    return sa.Table(config.table, sa.MetaData(), *columns, schema=config.tableSchema)


def _column_type(path: str, key: bool) -> sa.types.TypeEngine[Any]:
    if path == "timestamp":
        return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
    if path == "data":
        return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    if key or path in ("id", "event"):
        return sa.String(KEY_LENGTH)
    return sa.Text()


def _match_columns(target: _Target, table: sa.Table, mapping: dict[str, str]) -> dict[str, str]:
    """Mapped columns by their name in the table (matched case-insensitively if need be)."""
    by_lower = {c.name.lower(): c.name for c in table.columns}
    matched: dict[str, str] = {}
    missing = []
    for name, path in mapping.items():
        actual = name if name in table.columns else by_lower.get(name.lower())
        if actual is None:
            missing.append(f"{name} (mapped from {path})")
        else:
            matched[actual] = path
    if missing:
        plural = "columns" if len(missing) > 1 else "column"
        raise Mismatch(
            f"table {target.name} has no {plural} {', '.join(missing)}; add "
            f"{'them' if len(missing) > 1 else 'it'} to the table (ALTER TABLE {target.name} ADD COLUMN ...) "
            "or change config.mapping"
        )
    return matched


def _require_unique_key(target: _Target, table: sa.Table, columns: dict[str, str]) -> None:
    if not target.config.key:
        return
    lowered = {c.lower(): c for c in columns}
    wanted = {lowered.get(k.lower(), k) for k in target.config.key}
    unique: list[set[str]] = [{c.name for c in table.primary_key.columns}]
    unique += [{c.name for c in index.columns} for index in table.indexes if index.unique]
    unique += [
        {c.name for c in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    if wanted not in unique:
        key = ", ".join(target.config.key)
        raise Mismatch(
            f"table {target.name} has no primary key or unique index on ({key}), which config.key needs "
            f"to find a row again; add one (ALTER TABLE {target.name} ADD PRIMARY KEY ({key}))"
        )


def _statement(target: _Target, table: sa.Table, columns: dict[str, str]) -> Any:
    """INSERT; with a key, each dialect's own upsert (or insert-if-new in append mode)."""
    config = target.config
    if not config.key:
        return sa.insert(table)
    lowered = {c.lower(): c for c in columns}
    key = [lowered.get(k.lower(), k) for k in config.key]
    others = [c for c in columns if c not in key]
    update = config.mode == "upsert" and bool(others)
    if target.dialect == "mysql":
        upsert = mysql.insert(table)
        # nothing to update: set the key to itself, which leaves the row as it was
        values = {c: upsert.inserted[c] for c in (others if update else key[:1])}
        return upsert.on_duplicate_key_update(values)
    statement = postgresql.insert(table) if target.dialect == "postgresql" else sqlite.insert(table)
    if update:
        return statement.on_conflict_do_update(
            index_elements=[table.c[k] for k in key], set_={c: statement.excluded[c] for c in others}
        )
    return statement.on_conflict_do_nothing(index_elements=[table.c[k] for k in key])


# --- rows -------------------------------------------------------------------------------------


def _rows(target: _Target, envelopes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    converters = target.converters
    rows = [{column: convert(envelope) for column, convert in converters} for envelope in envelopes]
    if not target.key_columns or len(rows) == 1:
        return rows
    # one row per key in a batch: the last one wins in upsert mode, the first in append mode
    upsert = target.config.mode == "upsert"
    by_key: dict[Any, dict[str, Any]] = {}
    for row in rows if upsert else reversed(rows):
        identity = tuple(_hashable(row[c]) for c in target.key_columns)
        by_key.pop(identity, None)
        by_key[identity] = row
    return list(by_key.values()) if upsert else list(reversed(by_key.values()))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


def _field(envelope: dict[str, Any], parts: Sequence[str]) -> Any:
    value: Any = envelope
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _converter(target: _Target, column: sa.Column[Any], path: str) -> Callable[[dict[str, Any]], Any]:
    """envelope -> the value of `path` as the column's type takes it; one that cannot fit is a Mismatch."""
    parts = tuple(path.split("."))
    top = parts[0] if len(parts) == 1 else None
    kind = column.type
    type_name = _type_name(target, kind)

    def read(envelope: dict[str, Any]) -> Any:
        return envelope.get(top) if top is not None else _field(envelope, parts)

    def refuse(value: Any, envelope: dict[str, Any], expected: str) -> Mismatch:
        return Mismatch(
            f"column {column.name} of table {target.name} is {type_name}, but {path} of event "
            f"{envelope.get('id')} is {_describe(value)}, not {expected}; change the column's type or "
            "config.mapping"
        )

    if isinstance(kind, sa.JSON):
        return read

    if isinstance(kind, sa.Boolean):

        def boolean(envelope: dict[str, Any]) -> Any:
            value = read(envelope)
            if value is None or isinstance(value, bool):
                return value
            if value in (0, 1) and not isinstance(value, str):
                return bool(value)
            raise refuse(value, envelope, "a boolean")

        return boolean

    if isinstance(kind, sa.Integer):

        def integer(envelope: dict[str, Any]) -> Any:
            value = read(envelope)
            if value is None or isinstance(value, int):
                return value if not isinstance(value, bool) else int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise refuse(value, envelope, "an integer")

        return integer

    if isinstance(kind, sa.Numeric):

        def number(envelope: dict[str, Any]) -> Any:
            value = read(envelope)
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
                return value
            raise refuse(value, envelope, "a number")

        return number

    if isinstance(kind, sa.DateTime | sa.Date):
        day_only = not isinstance(kind, sa.DateTime)
        aware = bool(getattr(kind, "timezone", False)) and target.dialect == "postgresql"

        def moment(envelope: dict[str, Any]) -> Any:
            value = read(envelope)
            if value is None:
                return None
            parsed = _parse_moment(value)
            if parsed is None:
                raise refuse(value, envelope, "an RFC 3339 date-time")
            if day_only:
                return parsed.date()
            return parsed if aware else parsed.astimezone(UTC).replace(tzinfo=None)  # naive columns hold UTC

        return moment

    if isinstance(kind, sa.String):
        length = getattr(kind, "length", None)

        def text(envelope: dict[str, Any]) -> Any:
            value = read(envelope)
            if value is None:
                return None
            written = value if isinstance(value, str) else _as_text(value)
            if length and len(written) > length:
                raise Mismatch(
                    f"column {column.name} of table {target.name} holds {length} characters, but {path} of "
                    f"event {envelope.get('id')} has {len(written)}; widen the column or change config.mapping"
                )
            return written

        return text

    return read  # other types (UUID, arrays, ...): the database decides


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # numbers, booleans, objects


def _parse_moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, date):
        return "a date"
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def _type_name(target: _Target, kind: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(kind.compile(dialect=target.engine.dialect))
    except Exception:
        return type(kind).__name__.upper()


# --- errors -----------------------------------------------------------------------------------


def _translate(exc: sa.exc.SQLAlchemyError, target: _Target) -> tuple[str, bool]:
    """(a message naming the table but no URL, SQL or row values; whether the database is unavailable)."""
    unavailable = _unavailable(exc, target.dialect)
    orig = getattr(exc, "orig", None)
    if orig is None:
        text = type(exc).__name__
        if isinstance(exc, sa.exc.TimeoutError):
            text = "no connection became free within config.timeout"
    else:
        text = _first_line(orig)
    column = getattr(getattr(orig, "diag", None), "column_name", None)
    if column and column not in text:
        text += f" (column {column})"
    text = _scrub(text, target.secrets)
    if unavailable:
        return f"the database of table {target.name} is unavailable: {text}", True
    return f"writing to table {target.name} failed: {text}", False


def _unavailable(exc: sa.exc.SQLAlchemyError, dialect: str) -> bool:
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
        return True
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InternalError):
        return False  # DataError, IntegrityError, ProgrammingError, NotSupportedError: ours to fix
    if dialect == "mysql":
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        return not isinstance(code, int) or code >= 2000 or code in _MYSQL_UNAVAILABLE
    if dialect == "sqlite":
        return any(word in str(exc.orig).lower() for word in _SQLITE_UNAVAILABLE)
    return True  # PostgreSQL: connection failures, shutdowns, timeouts, deadlocks


def _first_line(orig: BaseException) -> str:
    args = orig.args
    # pymysql: (code, message)
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(orig)
    line = text.strip().splitlines()[0] if text.strip() else type(orig).__name__
    line = _PG_VALUE.sub(": (value withheld)", line)
    line = _MYSQL_VALUE.sub("value: (withheld)", line)
    return line[:MESSAGE_LIMIT]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
