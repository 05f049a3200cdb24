"""The file sink's own exceptions: problems on our side, which retrying as is will not fix.

FileSink turns them into failures that do not count against the storage's circuit breaker.
"""

from __future__ import annotations


class FileSinkError(Exception):
    """A problem in the unit's data or the integration's config: retrying as is will not help."""


class AttachmentError(FileSinkError):
    """The attachment of a note.uploaded event could not be copied."""
