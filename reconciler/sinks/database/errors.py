"""What went wrong, said without the URL, the SQL or a row's values, and whose side it is on.

A Mismatch is ours to fix (the table does not fit the config, a value does not fit its
column): it never counts against the database's circuit breaker. A database error is
translated into a message naming the table, and classified: unavailable (the server, the
network, a timeout; retried, and counted by the breaker) or not (our rows or config).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from reconciler.registry import scrub
from reconciler.sinks.database.target import Target

MESSAGE_LIMIT = 300

# MySQL/MariaDB server errors that say the server is unavailable rather than that our rows or
# config are wrong (client errors, 2000 and up, are always the connection's).
_MYSQL_UNAVAILABLE = {1040, 1044, 1045, 1049, 1053, 1152, 1205, 1213, 1927, 1969, 3024}
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only", "full")
# values quoted in database messages: PostgreSQL `...: "value"`, MySQL `value: 'value'`
_PG_VALUE = re.compile(r':\s*"(?:[^"]|"")*"\s*$')
_MYSQL_VALUE = re.compile(r"value: '(?:[^']|'')*'")


class Mismatch(Exception):
    """The table does not fit the config or a value does not fit its column: our side to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def translate(exc: sa.exc.SQLAlchemyError, target: Target) -> tuple[str, bool]:
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
    text = scrub(text, target.secrets, min_chars=4)
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
