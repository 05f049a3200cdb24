"""The file sink of `file` integrations, on fsspec: events as JSON Lines or CSV objects.

Objects are immutable: each delivered unit (one event, or one batch) writes its own objects,
named from the `path` pattern with the unit's id before the extension
(`exports/grade.published/2024-01-15.bat_0190a4....jsonl`). The unit's id is stable across
retries, so a retried unit overwrites what an interrupted try may have left instead of adding
a duplicate. A unit whose records for one name exceed `rolloverSize` is split into numbered
parts (`...-001.jsonl`, `...-002.jsonl`). A pattern with `{id}` names one object per event and is
used as it stands. docs/decisions.md says why objects are not appended to.

Writes are atomic: object stores (S3, GCS, Azure) publish an object whole when its upload
completes; on file systems the object is written under a hidden temporary name in the same
directory, synced, then renamed. `note.uploaded` events can have their file copied next to the
record (`copyAttachments`), fetched over HTTP(S) with the SSRF rules of the HTTP sink and a size
cap. fsspec is blocking: its calls run on the sink's own threads, bounded by `config.timeout`.

The modules, each one concern:
- target.py: Target, opening the storage, putting an object atomically, inspecting a prefix
- naming.py: object names from the `path` pattern and the unit's id
- formats.py: records, encoded as JSON Lines or CSV, split at rolloverSize
- attachments.py: copying a note's uploaded file, behind the SSRF guard
- errors.py: FileSinkError and AttachmentError, our side's problems
- sink.py: FileSink, the RecordSink these make up
"""

from __future__ import annotations

from reconciler.sinks.files.errors import AttachmentError, FileSinkError
from reconciler.sinks.files.sink import FileSink
from reconciler.sinks.files.target import Target

__all__ = ["AttachmentError", "FileSink", "FileSinkError", "Target"]
