"""Validate a tree of integration files: find the files, validate each document (see
`manifests.document`), collect the valid models, then run the checks across files.

Every problem becomes a Diagnostic at its file, line and column; nothing stops at the first
error, so one run reports all of them. A `TreeValidator` keeps what it checked, so a later
pass re-parses only the files whose content changed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.manifests.diagnostics import Diagnostic
from reconciler.manifests.document import validate_document
from reconciler.manifests.loader import Document, LoadedFile, content_hash, discover, load_bytes, read_file
from reconciler.manifests.models import (
    AnyIntegration,
    ApiIntegration,
    DatabaseIntegration,
    EventTypeDecl,
    FileIntegration,
    WebhookIntegration,
)

__all__ = [
    "Progress",
    "Source",
    "TreeValidator",
    "ValidEventType",
    "ValidIntegration",
    "ValidationResult",
    "paused_gc",
    "validate_document",
    "validate_paths",
]

Progress = Callable[[int, int], None]


@dataclass
class ValidIntegration:
    """A document that validated as an Integration, with its model."""

    doc: Document
    spec: AnyIntegration  # `id` always set (defaulted from the file name where absent)


@dataclass
class ValidEventType:
    """A document that validated as an EventType, with its model."""

    doc: Document
    spec: EventTypeDecl


@dataclass
class ValidationResult:
    """What a validation run found: the valid documents, every Integration document, the diagnostics."""

    integrations: list[ValidIntegration] = field(default_factory=list)
    event_types: list[ValidEventType] = field(default_factory=list)
    # every document of kind Integration, valid or not: checks across files read these
    integration_docs: list[Document] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # what does not make a file invalid, but is likely not what its author meant
    warnings: list[Diagnostic] = field(default_factory=list)
    files: int = 0
    documents: int = 0
    # content hash per file, for the reconciler's cache and plans
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def summary(self) -> dict[str, int]:
        return {
            "files": self.files,
            "documents": self.documents,
            "integrations": len(self.integrations),
            "errors": len(self.diagnostics),
            "warnings": len(self.warnings),
        }


def validate_paths(
    paths: Iterable[str | Path],
    *,
    check_env: bool = False,
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    root: Path | None = None,
    stdin: bytes | None = None,
    context: Iterable[str | Path] = (),
) -> ValidationResult:
    """Load and validate every integration file under `paths` (and `stdin`, as `<stdin>`).

    `context`: files and directories whose `kind: EventType` declarations count (a file's
    siblings in its config directory) without being validated: none of their problems is
    reported."""
    paths = list(paths)
    files, problems = discover(paths)
    read = ((_display(path, root), read_file(path, _display(path, root))) for path in files)
    sources: Iterable[Source] = itertools.chain([(STDIN_NAME, stdin)] if stdin is not None else [], read)
    declared = _context_event_types(context, {os.path.realpath(f) for f in files}, root)
    where = ", ".join(str(p) for p in paths) or (STDIN_NAME if stdin is not None else ".")
    total = len(files) + (stdin is not None)
    with paused_gc():
        return TreeValidator()._validate_sources(
            sources, total, where, problems, check_env, environ, progress, context=declared
        )


STDIN_NAME = "<stdin>"


def _context_event_types(context: Iterable[str | Path], validated: set[str], root: Path | None) -> list[ValidEventType]:
    """The valid EventType declarations of the context files that are not validated themselves."""
    found: list[ValidEventType] = []
    files, _ = discover(context)  # a sibling's problems are its own: not reported here
    for path in files:
        if os.path.realpath(path) in validated:
            continue
        name = _display(path, root)
        raw = read_file(path, name)
        if not isinstance(raw, bytes):
            continue
        for doc in load_bytes(raw, name).documents:
            if doc.data.get("kind") == "EventType":
                spec, _problems = validate_document(doc)
                if isinstance(spec, EventTypeDecl):
                    found.append(ValidEventType(doc, spec))
    return found


# the file's display name, and its content (or a load failure, or its still-valid cache entry)
Source = tuple[str, "bytes | LoadedFile | _CheckedFile"]


@dataclass
class _CheckedFile:
    loaded: LoadedFile
    checked: list[tuple[Document, AnyIntegration | EventTypeDecl | None, list[Diagnostic]]]
    signature: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) when read from disk


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around a bulk build of long-lived objects.

    Loading thousands of documents makes the collector rescan the growing heap again and
    again (measured: 3 of 6.7 seconds for 10,000 files). Nothing built here is cyclic garbage,
    so collecting once afterwards loses nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class TreeValidator:
    """Validates a tree of files, re-parsing only the files whose content changed since the
    previous call (the reconciler keeps one for its whole life; the CLI uses one per run)."""

    def __init__(self) -> None:
        self._files: dict[str, _CheckedFile] = {}
        self._cross_file_memo: dict[tuple[str, str, int, str], list[Diagnostic]] = {}
        self._signatures: dict[str, tuple[int, int, int] | None] = {}

    def validate_paths(
        self,
        paths: Iterable[str | Path],
        *,
        check_env: bool = False,
        environ: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        root: Path | None = None,
        trust_stat: bool = False,
    ) -> ValidationResult:
        """`trust_stat`: skip reading a file whose modification time, size and inode are those
        of the previous call (the reconciler's watch-triggered passes; its periodic pass reads all)."""
        paths = list(paths)
        files, problems = discover(paths)
        where = ", ".join(str(p) for p in paths) or "."
        return self.validate_sources(
            self._sources(files, root, trust_stat),
            total=len(files),
            problems=problems,
            where=where,
            check_env=check_env,
            environ=environ,
            progress=progress,
        )

    def _sources(self, files: list[str], root: Path | None, trust_stat: bool) -> Iterator[Source]:
        for path in files:
            name = _display(path, root)
            try:
                stat = os.stat(path)
                signature: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError:
                signature = None
            cached = self._files.get(name)
            if trust_stat and cached is not None and signature is not None and cached.signature == signature:
                yield name, cached
                continue
            content = read_file(path, name)
            if isinstance(content, bytes):
                self._signatures[name] = signature
            yield name, content

    def validate_sources(
        self,
        sources: Iterable[Source],
        *,
        total: int,
        where: str,
        problems: list[Diagnostic] | None = None,
        check_env: bool = False,
        environ: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ValidationResult:
        with paused_gc():
            return self._validate_sources(sources, total, where, problems, check_env, environ, progress)

    def _validate_sources(
        self,
        sources: Iterable[Source],
        total: int,
        where: str,
        problems: list[Diagnostic] | None,
        check_env: bool,
        environ: Mapping[str, str] | None,
        progress: Progress | None,
        context: list[ValidEventType] | None = None,
    ) -> ValidationResult:
        from reconciler.manifests.checks import check_across_documents, never_delivering

        result = ValidationResult(diagnostics=list(problems or []), files=total)
        # first, so that a type declared both there and here is reported here, where it is checked
        result.event_types.extend(context or [])
        context_files = {item.doc.file for item in context or []}
        seen: dict[str, _CheckedFile] = {}
        for number, (name, content) in enumerate(sources, 1):
            entry = self._check_file(name, content)
            seen[name] = entry
            result.hashes[name] = entry.loaded.content_hash
            result.diagnostics.extend(entry.loaded.problems)
            for doc, spec, doc_problems in entry.checked:
                result.documents += 1
                _collect(result, doc, spec, doc_problems)
            if progress is not None:
                progress(number, total)
        self._files = seen  # forget files that are gone
        if not result.integration_docs and not result.diagnostics:
            result.diagnostics.append(_nothing_found(where))
        across = check_across_documents(result, check_env=check_env, environ=environ, memo=self._cross_file_memo)
        result.diagnostics.extend(d for d in across if d.file not in context_files)
        result.warnings.extend(never_delivering(result.integrations))
        return result

    def _check_file(self, name: str, content: bytes | LoadedFile | _CheckedFile) -> _CheckedFile:
        if isinstance(content, _CheckedFile):
            return content
        if isinstance(content, LoadedFile):
            return _CheckedFile(content, [])
        signature = self._signatures.pop(name, None)
        digest = content_hash(content)
        cached = self._files.get(name)
        if cached is not None and cached.loaded.content_hash == digest:
            cached.signature = signature
            return cached
        loaded = load_bytes(content, name, digest)
        return _CheckedFile(loaded, [(doc, *validate_document(doc)) for doc in loaded.documents], signature)


def _nothing_found(where: str) -> Diagnostic:
    return Diagnostic(
        where,
        0,
        0,
        "no integrations found",
        hint="add files with kind: Integration (try `reconciler new slack ID`)",
        code="no-integrations",
    )


def _display(path: str, root: Path | None) -> str:
    text = path
    if root is not None:
        prefix = str(root).rstrip("/") + "/"
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _collect(
    result: ValidationResult, doc: Document, spec: AnyIntegration | EventTypeDecl | None, problems: list[Diagnostic]
) -> None:
    if doc.data.get("kind") == "Integration":
        result.integration_docs.append(doc)
    result.diagnostics.extend(problems)
    if isinstance(spec, ApiIntegration | WebhookIntegration | DatabaseIntegration | FileIntegration):
        result.integrations.append(ValidIntegration(doc, spec))
    elif isinstance(spec, EventTypeDecl):
        result.event_types.append(ValidEventType(doc, spec))
