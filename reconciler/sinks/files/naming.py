"""Object names from the `path` pattern: placeholders filled from the event, the unit's id added.

Every part taken from event data is made safe for a path (no separators, no dot-dot), so an
event cannot name an object outside the target.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from reconciler.sinks.files.errors import FileSinkError

UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def expand(pattern: str, envelope: dict[str, Any], integration_id: str) -> str:
    """The pattern with `{event}`, `{date}`, `{year}` ... `{hour}`, `{id}`, `{integration}` filled in."""
    moment = _moment(envelope.get("timestamp"))
    values = {
        "event": safe(str(envelope.get("event", "unknown"))),
        "date": moment.strftime("%Y-%m-%d"),
        "year": moment.strftime("%Y"),
        "month": moment.strftime("%m"),
        "day": moment.strftime("%d"),
        "hour": moment.strftime("%H"),
        "id": safe(str(envelope.get("id", ""))),
        "integration": integration_id,
    }
    return re.sub(r"\{([a-z]+)\}", lambda m: values[m.group(1)], pattern)


def part_name(name: str, message_id: str, number: int | None) -> str:
    """`dir/2024-01-15.jsonl` -> `dir/2024-01-15.<unit id>[-NNN].jsonl`."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.rpartition(".")
    if not dot or not stem:
        stem, extension = base, ""
    suffix = f".{safe(message_id)}" + (f"-{number:03d}" if number is not None else "")
    return f"{directory + '/' if directory else ''}{stem}{suffix}{'.' + extension if extension else ''}"


def _moment(timestamp: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise FileSinkError(f"the event's timestamp {str(timestamp)[:40]!r} is not RFC 3339") from None


def safe(text: str) -> str:
    """A path part from event data: no separators, no dot-dot, nothing a shell or URL minds."""
    cleaned = UNSAFE_NAME.sub("_", text).strip(".")
    return cleaned or "_"
