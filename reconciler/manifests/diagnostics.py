"""Diagnostics: what is wrong, where (file:line:col and JSON pointer), and how to fix it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    """How bad a diagnostic is: errors make a file invalid, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a file: where it is (file, line, column, JSON pointer), what, and the fix."""

    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file or directory
    column: int  # 1-based
    message: str
    pointer: str = ""  # JSON pointer (RFC 6901) into the document, "" for the whole document
    hint: str = ""
    code: str = "invalid"  # a stable category for machines (json output, tests)
    severity: Severity = Severity.ERROR
    document: int | None = None  # 0-based document in a multi-document file; None: the whole file

    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    def as_text(self) -> str:
        where = f" ({self.pointer})" if self.pointer else ""
        text = f"{self.location()}: {self.severity.value}: {self.message}{where}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def as_github(self) -> str:
        """A GitHub Actions workflow command: shows as an annotation on the pull request."""
        props = [f"file={_escape_property(self.file)}"]
        if self.line:
            props += [f"line={self.line}", f"col={self.column}"]
        props.append(f"title={_escape_property('reconciler validate: ' + self.code)}")
        body = self.message + (f" ({self.pointer})" if self.pointer else "")
        if self.hint:
            body += f"\nhint: {self.hint}"
        return f"::{self.severity.value} {','.join(props)}::{_escape_data(body)}"

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    return (d.file, d.line, d.column, d.message)


def render(diagnostics: Iterable[Diagnostic], fmt: str, summary: dict[str, int]) -> str:
    items = sorted(diagnostics, key=sort_key)
    if fmt == "json":
        return json.dumps(
            {
                "valid": not any(d.severity is Severity.ERROR for d in items),
                **summary,
                "diagnostics": [d.as_dict() for d in items],
            },
            indent=2,
        )
    if fmt == "github":
        return "\n".join(d.as_github() for d in items)
    return "\n".join(d.as_text() for d in items)


def pointer_of(loc: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer of a path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in loc)
