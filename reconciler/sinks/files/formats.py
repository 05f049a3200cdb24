"""A unit's objects: its records grouped by name, encoded as JSON Lines or CSV, split at rolloverSize.

A record is the envelope's `id`, `event`, `timestamp` and `data` (plus the copied attachment),
or the columns of `config.mapping`. Each name gets the unit's id before its extension, so a
retried unit writes the same objects again; a pattern with `{id}` names one object per event.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from reconciler.manifests.models import FileConfig, parse_size
from reconciler.sinks.files.naming import expand, part_name

DEFAULT_CSV_COLUMNS = ("id", "event", "timestamp", "data")


@dataclass(frozen=True)
class Planned:
    """One object a unit writes: its name, its encoded body and how many records it holds."""

    name: str  # relative to the target's root
    body: bytes
    records: int


def plan(
    integration_id: str,
    config: FileConfig,
    envelopes: list[dict[str, Any]],
    message_id: str,
    attachments: dict[str, dict[str, Any]] | None = None,
) -> list[Planned]:
    """The objects one unit writes: records grouped by expanded name, split at rolloverSize."""
    attachments = attachments or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for envelope in envelopes:
        groups.setdefault(expand(config.path, envelope, integration_id), []).append(envelope)
    rollover = parse_size(config.rolloverSize)
    per_event = "{id}" in config.path
    objects: list[Planned] = []
    for name, members in groups.items():
        records = [record(config, e, attachments.get(e["id"])) for e in members]
        parts = _split(config, records, rollover)
        for number, (body, count) in enumerate(parts, start=1):
            if per_event and len(parts) == 1:
                final = name
            else:
                final = part_name(name, message_id, number if len(parts) > 1 else None)
            objects.append(Planned(final, body, count))
    return objects


def record(config: FileConfig, envelope: dict[str, Any], attachment: dict[str, Any] | None) -> dict[str, Any]:
    if config.mapping:
        return {column: field_value(envelope, path) for column, path in config.mapping.items()}
    shaped = {k: envelope.get(k) for k in DEFAULT_CSV_COLUMNS}
    if config.format == "csv" and config.copyAttachments:
        shaped["attachment"] = attachment["path"] if attachment else None
    elif attachment is not None:
        shaped["attachment"] = attachment
    return shaped


def field_value(envelope: dict[str, Any], path: str) -> Any:
    value: Any = envelope
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def csv_columns(config: FileConfig) -> list[str]:
    if config.mapping:
        return list(config.mapping)
    return [*DEFAULT_CSV_COLUMNS, *(["attachment"] if config.copyAttachments else [])]


def _split(config: FileConfig, records: list[dict[str, Any]], rollover: int) -> list[tuple[bytes, int]]:
    """Serialized parts of at most `rollover` bytes (a single larger record makes its own part)."""
    if config.format == "csv":
        columns = csv_columns(config)
        header = _csv_line(columns)
        escape = config.csvFormulaEscape
        lines = [_csv_line([_csv_cell(r.get(c), escape) for c in columns]) for r in records]
    else:
        header = b""
        lines = [
            (json.dumps(r, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode() for r in records
        ]
    parts: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = len(header)
    for line in lines:
        if current and size + len(line) > rollover:
            parts.append((header + b"".join(current), len(current)))
            current, size = [], len(header)
        current.append(line)
        size += len(line)
    if current:
        parts.append((header + b"".join(current), len(current)))
    return parts


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue().encode()


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection, OWASP):
# event data comes from users and partners, and the file is opened by staff.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any, escape: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        # only text: a number (-5) is never a formula, and JSON text starts with { or [
        return "'" + value if escape and value.startswith(_FORMULA_STARTS) else value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
