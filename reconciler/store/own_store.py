"""Whether a database integration's URL is the daemon's own store: checked when an integration is
applied (reconcile.desired) and again at every attempt of the database sink.

A database sink writing into the store could forge what the daemon trusts: audit entries,
deliveries, dead letters. Same database means the same SQLite file (by real path), or the same
PostgreSQL server, database and schema (the table's `tableSchema`, else the URL's search_path,
else public); a second schema of the same database is another store and is allowed.
"""

from __future__ import annotations

import os
import re

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

_SEARCH_PATH = re.compile(r"search_path\s*=\s*([^\s,]+)")
_LOOPBACK = {"", "localhost", "127.0.0.1", "::1", "[::1]"}


def is_own_store(url: str, table_schema: str | None, store_url: str | None) -> bool:
    """True when writing to `url` (resolved; tables in `table_schema`) writes into the store."""
    if not store_url:
        return False
    sink, store = _parsed(url), _parsed(store_url)
    if sink is None or store is None:
        return False
    kind = _kind(sink)
    if kind != _kind(store):
        return False
    if kind == "sqlite":
        if not sink.database or not store.database or ":memory:" in (sink.database, store.database):
            return False
        return os.path.realpath(sink.database) == os.path.realpath(store.database)
    if kind != "postgresql":
        return False  # the store is SQLite or PostgreSQL
    return _server(sink) == _server(store) and (table_schema or _schema(sink)) == _schema(store)


def _parsed(url: str) -> URL | None:
    try:
        return make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None


def _kind(url: URL) -> str:
    backend = url.drivername.split("+", 1)[0].lower()
    return "postgresql" if backend in ("postgres", "postgresql") else backend


def _server(url: URL) -> tuple[str, int, str]:
    host = (url.host or str(url.query.get("host") or "")).lower()
    # a local socket and loopback reach the same server as far as this check can tell
    host = "loopback" if host in _LOOPBACK or host.startswith("/") else host
    # libpq's defaults: port 5432, a database named after the user
    return host, url.port or 5432, url.database or url.username or ""


def _schema(url: URL) -> str:
    options = url.query.get("options")
    text = " ".join(options) if isinstance(options, tuple) else str(options or "")
    found = _SEARCH_PATH.search(text)
    return found.group(1).strip("\"'") if found else "public"
