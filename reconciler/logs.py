"""Structured logs: JSON lines when not on a terminal (collectors parse them), text on one."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# LogRecord's own attributes, and uvicorn's terminal-colour duplicate of the message
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time, level, logger, message, fields), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k != "fields"})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One readable line per record, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", {}) or {}
        extra = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        text = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    """fmt: auto (JSON unless stderr is a terminal), json or text."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def count(number: int, singular: str, plural: str | None = None) -> str:
    """`1 integration`, `2 integrations`, `0 deliveries` (with `plural` where adding an s is wrong):
    the one way log lines and the command line say how many."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
