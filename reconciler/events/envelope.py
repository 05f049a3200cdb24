"""The event envelope: `{"id", "event", "timestamp", "data"}`, and checks of incoming events.

Intake takes `event` and `data` (and optionally `timestamp`); it adds a stable id, which is
the idempotency key of every delivery (`webhook-id`) and never changes across retries.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jsonschema

from reconciler.events.catalog import CUSTOM_PREFIX, EventType
from reconciler.events.jsontext import MAX_JSON_DEPTH, deeper_than_cap, problem_in
from reconciler.events.patterns import EVENT_NAME
from reconciler.events.schemas import compile_fast, validator

MAX_DATA_BYTES = 256 * 1024  # an event is a notification, not a file transfer
MAX_EVENT_NAME_CHARS = 128  # the store's column
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def new_id(prefix: str) -> str:
    """Time-ordered, unique: 12 hex digits of milliseconds and 16 random ones."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def now_timestamp() -> str:
    """RFC 3339 UTC with milliseconds and Z, as in the integration guide."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class EventRejected(ValueError):
    """An event that intake refuses; `reasons` lists every problem, each with its JSON pointer."""

    def __init__(self, reasons: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{r['pointer'] or '/'}: {r['message']}" for r in reasons))
        self.reasons = reasons


class EventChecker:
    """Validates events against the catalog; one compiled validator per event type."""

    def __init__(self, catalog: Mapping[str, EventType]) -> None:
        self.catalog = dict(catalog)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._fast: dict[str, Any] = {}

    def check(self, event: Any, data: Any, timestamp: Any = None, data_json: str | None = None) -> list[dict[str, str]]:
        """Every reason the event is refused (empty when it is fine). `data_json`: the data
        as serialize_data() wrote it, when the caller has it already."""
        reasons: list[dict[str, str]] = []
        if not isinstance(event, str) or not EVENT_NAME.match(event) or len(event) > MAX_EVENT_NAME_CHARS:
            reasons.append(_reason("/event", "event must be a dotted event type such as user.registered"))
        elif event not in self.catalog and not event.startswith(CUSTOM_PREFIX):
            reasons.append(
                _reason(
                    "/event",
                    f"unknown event type {event!r}: declare it with kind: EventType, or use the custom. prefix",
                )
            )
        if timestamp is not None:
            wrong = _timestamp_problem(timestamp)
            if wrong:
                reasons.append(_reason("/timestamp", wrong))
        if not isinstance(data, dict):
            reasons.append(_reason("/data", "data must be a JSON object"))
            return reasons
        text = data_json if data_json is not None else serialize_data(data)
        # What sinks cannot take is refused here, naming the field, rather than dead-lettered
        # after every retry: nesting beyond MAX_JSON_DEPTH (which also fails serialization), a
        # lone surrogate (no UTF-8 for it), a NUL (json.dumps writes it as the escape \u0000).
        # The walk over the data runs only when its text shows a sign of one of them.
        size, suspect = 0, text is None
        if text is not None:
            try:
                size = len(text) if text.isascii() else len(text.encode())
            except UnicodeEncodeError:
                suspect = True
            suspect = suspect or "\\u0000" in text or (_brackets(text) > MAX_JSON_DEPTH and deeper_than_cap(data))
        if suspect:
            found = problem_in(data, nul=True, base="/data")
            if found is not None:
                reasons.append(_reason(*found))
                return reasons
        if text is None:
            reasons.append(_reason("/data", "data must be JSON: no NaN or Infinity"))
            return reasons
        if size > MAX_DATA_BYTES:
            reasons.append(
                _reason(
                    "/data",
                    f"data is larger than {MAX_DATA_BYTES // 1024} KiB; send a reference "
                    "(a URL) to large content instead",
                )
            )
        if reasons:
            return reasons
        assert isinstance(event, str)
        if event not in self.catalog:
            return reasons  # custom.*: any object
        if event not in self._fast:
            self._fast[event] = compile_fast(self.catalog[event].schema)
        fast = self._fast[event]
        if fast is not None and fast(data):
            return reasons  # valid: jsonschema is needed only to explain what is wrong
        validator = self._validator(event)
        if validator is not None:
            for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
                pointer = "/data" + "".join(f"/{p}" for p in error.absolute_path)
                reasons.append(_reason(pointer, error.message))
        return reasons

    def _validator(self, event: str) -> jsonschema.protocols.Validator | None:
        if event not in self.catalog:
            return None  # custom.*: any object
        if event not in self._validators:
            self._validators[event] = validator(self.catalog[event].schema)
        return self._validators[event]


def serialize_data(data: Any) -> str | None:
    """An event's data as the compact JSON stored and sent; None when it is not JSON (or nested
    too deep for the encoder, which EventChecker reports as such)."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return None


def _brackets(text: str) -> int:
    return text.count("{") + text.count("[")


def _timestamp_problem(timestamp: Any) -> str | None:
    """Why an event's timestamp is refused, or None: RFC 3339 in form, and a real instant
    (month 13, day 45, year 0 or an offset past year 9999 in UTC are not, and would fail every
    sink that reads it)."""
    if not isinstance(timestamp, str) or not _RFC3339.match(timestamp):
        return "timestamp must be RFC 3339, such as 2024-01-15T10:30:00.000Z"
    try:
        datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        return f"timestamp {timestamp!r} is not a real instant ({exc}); send one such as 2024-01-15T10:30:00.000Z"
    return None


def envelope_json(event_id: str, event: str, timestamp: str, data_json: str) -> bytes:
    """The envelope `{"id", "event", "timestamp", "data"}` as compact JSON, from data already
    serialized: what is sent without a template, without encoding the data a second time."""
    head = json.dumps({"id": event_id, "event": event, "timestamp": timestamp}, separators=(",", ":"))
    return f'{head[:-1]},"data":{data_json}}}'.encode()


def _reason(pointer: str, message: str) -> dict[str, str]:
    return {"pointer": pointer, "message": message}
