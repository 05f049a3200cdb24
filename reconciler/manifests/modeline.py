"""The `# yaml-language-server: $schema=...` line at the top of an integration file, which
editors follow to check the file as it is typed.

It must resolve where the file is, in whatever repository holds it: a path relative to the
file when a `schemas/` folder is found at or above it within its repository (this one, or one
where `reconciler schemas -o schemas` was run), else the URL at which a daemon serves the
schema (`/schemas/NAME`)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath

DEFAULT_SERVER = "http://127.0.0.1:8080"
_MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<location>\S+)\n", re.MULTILINE)


def schema_location(schema_name: str, file_dir: Path, server: str = DEFAULT_SERVER) -> str:
    """Where a file in `file_dir` finds the schema `schema_name` (integration.schema.json)."""
    start = file_dir.resolve()
    for folder in (start, *start.parents):
        candidate = folder / "schemas" / schema_name
        if candidate.is_file():
            return PurePath(os.path.relpath(candidate, start)).as_posix()
        if (folder / ".git").exists():
            break  # a path out of the repository would not resolve in anyone else's clone
    return f"{server.rstrip('/')}/schemas/{schema_name}"


def modeline(schema_name: str, file_dir: Path, server: str = DEFAULT_SERVER) -> str:
    return f"# yaml-language-server: $schema={schema_location(schema_name, file_dir, server)}\n"


def with_modeline(text: str, file_dir: Path, server: str = DEFAULT_SERVER) -> str:
    """The file's text with its modeline (if it has one) pointing where it resolves from `file_dir`."""
    found = _MODELINE.search(text)
    if found is None:
        return text
    schema_name = PurePath(found["location"]).name
    return text[: found.start()] + modeline(schema_name, file_dir, server) + text[found.end() :]
