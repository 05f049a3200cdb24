"""Where in its file an integration is declared: the line its YAML document starts at.

The registry keeps the file and the document's index; the line is read from the file by the
manifests loader (the positions `reconciler validate` reports) and kept per content hash, so
a file is parsed again only once it changed.
"""

from __future__ import annotations

import threading
from pathlib import Path

from reconciler.manifests.loader import LoadedFile, load_bytes, read_file

MAX_FILES = 10_000  # files whose document lines are kept
_STARTS: dict[tuple[str, str], tuple[int, ...]] = {}  # (path, content hash) -> document start lines
_LOCK = threading.Lock()


def document_line(config_dir: Path, file: str | None, document: int | None, content_hash: str | None) -> int | None:
    """The 1-based line the integration's document starts at; None when it cannot be said (no
    file, or the file changed since the revision was recorded)."""
    if not file or not content_hash:
        return None
    key = (str(config_dir / file), content_hash)
    starts = _STARTS.get(key)
    if starts is None:
        starts = _document_starts(key[0], file, content_hash)
        if starts is not None:
            with _LOCK:
                if len(_STARTS) >= MAX_FILES:
                    _STARTS.clear()
                _STARTS[key] = starts
    if starts is None:
        return None
    index = document or 0
    return starts[index] if index < len(starts) else None


def _document_starts(path: str, name: str, content_hash: str) -> tuple[int, ...] | None:
    """The start lines of the file's documents, if the file is still the version of the hash."""
    raw = read_file(path, name)
    if isinstance(raw, LoadedFile):
        return None
    loaded = load_bytes(raw, name)
    if loaded.content_hash != content_hash:
        return None  # edited since: the registry's revision is about another version of it
    return tuple(document.start[0] for document in loaded.documents)
