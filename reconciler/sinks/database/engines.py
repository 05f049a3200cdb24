"""SQLAlchemy engines, one per applied database integration, and the threads they run on.

An engine is made from the integration's resolved URL (the scheme picks the driver), with
connect and statement timeouts from `config.timeout`, and cached by integration id with its
generation and URL: when any of them changes the engine is replaced and the old one disposed.
The drivers are blocking, so every call runs on a small thread pool of the sink's own: a
target that hangs until its timeout occupies those threads, never the ones the store uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from reconciler.manifests.durations import parse_duration
from reconciler.manifests.models import DatabaseConfig
from reconciler.registry import AppliedIntegration, substitute
from reconciler.sinks import config_of
from reconciler.sinks.database.errors import Mismatch
from reconciler.sinks.database.target import Target
from reconciler.store.own_store import is_own_store

WORKERS = 8  # threads for all database integrations of one process
POOL_SIZE = 4
POOL_OVERFLOW = 4

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

T = TypeVar("T")


class Engines:
    """The current target (engine) of each database integration, and the sink's worker threads."""

    def __init__(self, workers: int = WORKERS, store_url: str | None = None) -> None:
        self.workers = workers
        self.store_url = store_url  # the daemon's own store, which no integration may write to
        self._targets: dict[str, Target] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """A blocking call on the worker threads (started on first use)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="database-sink")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def target(self, integration: AppliedIntegration) -> Target:
        """The integration's target, made anew (and the previous one's engine disposed) when its
        generation or resolved URL changed. A URL that cannot be one raises Mismatch."""
        config = config_of(integration, DatabaseConfig)
        url = substitute(config.url, integration.resolved)
        key = (integration.id, integration.generation, url)
        current = self._targets.get(integration.id)
        if current is not None and current.key == key:
            return current
        if is_own_store(url, config.tableSchema, self.store_url):
            raise Mismatch(
                "config.url (resolved) is the daemon's own store: rows written there could forge its "
                "audit entries and deliveries; point the integration at another database or schema"
            )
        secrets = tuple(v for v in (integration.resolved.values.values() if integration.resolved else ()) if v)
        target = open_target(key, config, url, secrets)
        self._targets[integration.id] = target
        if current is not None:
            await self.run(current.engine.dispose)
        return target

    async def close(self) -> None:
        """Dispose of every engine, then let the threads go."""
        targets, self._targets = list(self._targets.values()), {}
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        for target in targets:
            await loop.run_in_executor(executor, target.engine.dispose)
        executor.shutdown(wait=False)


def open_target(key: tuple[str, int, str], config: DatabaseConfig, url: str, secrets: tuple[str, ...]) -> Target:
    """A target with a new engine for the resolved URL; nothing is connected yet."""
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
    return Target(key, engine, config, dialect, secrets, database_file)


def _statement_timeout(engine: sa.Engine, milliseconds: int) -> None:
    """Every new PostgreSQL session gets the timeout, outside any transaction so it stays."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {int(milliseconds)}")
        dbapi_connection.autocommit = autocommit

    sa.event.listen(engine, "connect", on_connect)
