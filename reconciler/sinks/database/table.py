"""The target table: reflected (or created from the mapping), checked, and the statement that writes it.

The table is reflected once per engine, or created with `createTable: true`, then checked
against the mapping: a missing column or a key without a unique index is a Mismatch naming
the table and the column. The statement is an INSERT, or each dialect's own upsert keyed by
config.key, which makes a retried write idempotent.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from reconciler.manifests.models import DatabaseConfig
from reconciler.sinks.database.errors import Mismatch
from reconciler.sinks.database.rows import converter
from reconciler.sinks.database.target import DEFAULT_MAPPING, Target

KEY_LENGTH = 255  # a string key column is VARCHAR(255): MySQL cannot index unbounded text


def prepare(target: Target, create: bool) -> tuple[sa.Table, Any] | None:
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
        target.converters = [(c, converter(target, table.c[c], path)) for c, path in columns.items()]
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


def _match_columns(target: Target, table: sa.Table, mapping: dict[str, str]) -> dict[str, str]:
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


def _require_unique_key(target: Target, table: sa.Table, columns: dict[str, str]) -> None:
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


def _statement(target: Target, table: sa.Table, columns: dict[str, str]) -> Any:
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
