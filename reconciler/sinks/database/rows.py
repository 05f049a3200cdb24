"""Envelopes to rows: each mapped column's value, converted to what the column's type takes.

A converter per column is made once per prepared table; a value that cannot fit its column
(text where an integer goes, a string longer than the column) is a Mismatch naming the column,
the event and the field, never the value. A batch keeps one row per key (config.key).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from reconciler.sinks.database.errors import Mismatch
from reconciler.sinks.database.target import Target


def to_rows(target: Target, envelopes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch's rows, column by column, for a prepared target."""
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


def converter(target: Target, column: sa.Column[Any], path: str) -> Callable[[dict[str, Any]], Any]:
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


def _type_name(target: Target, kind: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(kind.compile(dialect=target.engine.dialect))
    except Exception:
        return type(kind).__name__.upper()
