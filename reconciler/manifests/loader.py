"""Load integration files into plain data that remembers where every node came from.

PyYAML composes node trees (with the C parser when present) and this module builds the
Python values itself, so that it can record the line and column of every key and value,
report a duplicate key at its second occurrence, expand merge keys, and stop an alias bomb
after a bounded number of nodes instead of expanding it.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.manifests.diagnostics import Diagnostic, pointer_of
from reconciler.manifests.discovery import EXTENSIONS as EXTENSIONS
from reconciler.manifests.discovery import discover as discover

try:  # the C parser is about ten times faster; fall back to pure Python where it is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_FILE_BYTES = 1024 * 1024  # an integration file is a few hundred bytes; 1 MiB is generous
MAX_NODES_PER_FILE = 100_000  # bounds alias expansion ("billion laughs")
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    _STR,
}
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
MAX_NUMBER_CHARS = 40
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_constructor = yaml.constructor.SafeConstructor()

Position = tuple[int, int]  # 1-based line and column


@dataclass
class Document:
    """One YAML document of a file, its data, and where its nodes are.

    Positions are worked out when a diagnostic first asks for one, by parsing the file's text
    again: most documents never need one, and a table of every node's position for each of
    10,000 files would be most of a full pass's memory."""

    file: str
    index: int  # 0-based position of the document in its file
    count: int  # number of documents in the file
    data: dict[str, Any]
    start: Position
    text: str = field(default="", repr=False)  # the file's decoded text, to find positions in
    _tables: tuple[dict[str, Position], dict[str, Position]] | None = field(default=None, repr=False)

    def position(self, pointer: str, at_key: bool = False) -> Position:
        """The position of the node at `pointer`, or of its nearest existing ancestor."""
        values, keys = self._positions()
        table = keys if at_key else values
        probe = pointer
        while True:
            if probe in table:
                return table[probe]
            if probe in values:
                return values[probe]
            if not probe:
                return self.start
            probe = probe.rsplit("/", 1)[0]

    def _positions(self) -> tuple[dict[str, Position], dict[str, Position]]:
        """(pointer -> value position, pointer -> key position), from the text, once."""
        if self._tables is None:
            self._tables = {}, {}
            if self.text:
                with contextlib.suppress(_LoadProblem, yaml.YAMLError):  # it parsed once; be safe all the same
                    self._tables = _position_tables(self.text, self.index)
        return self._tables

    def diagnostic(
        self,
        loc: Iterable[str | int],
        message: str,
        hint: str = "",
        code: str = "invalid",
        at_key: bool = False,
    ) -> Diagnostic:
        pointer = pointer_of(loc)
        line, column = self.position(pointer, at_key)
        return Diagnostic(self.file, line, column, message, pointer, hint, code, document=self.index)


@dataclass
class LoadedFile:
    """A file read and parsed: its documents with positions, its content hash, what went wrong."""

    path: str
    content_hash: str
    documents: list[Document]
    problems: list[Diagnostic]


class _LoadProblem(Exception):
    def __init__(self, position: Position, message: str, hint: str = "", code: str = "yaml") -> None:
        super().__init__(message)
        self.position = position
        self.message = message
        self.hint = hint
        self.code = code


def load_file(path: Path, display: str | None = None) -> LoadedFile:
    """Read and parse one file; every problem becomes a Diagnostic, never an exception."""
    name = display or str(path)
    raw = read_file(path, name)
    return raw if isinstance(raw, LoadedFile) else load_bytes(raw, name)


def read_file(path: str | Path, name: str) -> bytes | LoadedFile:
    """The file's bytes (at most MAX_FILE_BYTES + 1: enough to say it is too large), or a
    LoadedFile that says why it cannot be read. Only regular files: a FIFO would block the
    reader, and /dev/zero would never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            problem = Diagnostic(
                name, 0, 0, "not a regular file", hint="integration files are plain files", code="unreadable"
            )
            return LoadedFile(name, "", [], [problem])
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problem = Diagnostic(
            name,
            0,
            0,
            f"cannot read the file: {exc.strerror}",
            hint="check that it exists and is readable",
            code="unreadable",
        )
        return LoadedFile(name, "", [], [problem])


def load_bytes(raw: bytes, name: str, digest: str | None = None) -> LoadedFile:
    """Parse `raw`; `digest` is its content hash when the caller has computed it already."""
    digest = digest or content_hash(raw)
    try:
        documents = list(_parse(raw, name))
    except _LoadProblem as exc:
        line, column = exc.position
        problem = Diagnostic(name, line, column, exc.message, "", exc.hint, exc.code)
        return LoadedFile(name, digest, [], [problem])
    return LoadedFile(name, digest, documents, [])


def content_hash(raw: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _parse(raw: bytes, name: str) -> Iterator[Document]:
    if len(raw) > MAX_FILE_BYTES:
        raise _LoadProblem(
            (0, 0),
            f"the file is {len(raw):,} bytes, over the limit of {MAX_FILE_BYTES:,}",
            "an integration file holds one integration; split it or remove what is not config",
            "too-large",
        )
    text = _join_surrogate_escapes(_decode(raw))
    with _positions_of(text):
        yield from _parse_text(text, name)


@contextlib.contextmanager
def _positions_of(text: str) -> Iterator[None]:
    """Positions in `text` counted as editors count them (see _EXTRA_BREAKS) while inside."""
    starts = None
    if any(c in text for c in _EXTRA_BREAKS):
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
    token = _line_starts.set(starts)
    try:
        yield
    finally:
        _line_starts.reset(token)


def _parse_text(text: str, name: str) -> Iterator[Document]:
    if not text.strip():
        raise _LoadProblem((1, 1), "the file is empty", "declare an integration in it, or delete it", "empty")
    try:
        roots = [node for node in yaml.compose_all(text, Loader=_Loader) if not _is_blank(node)]
    except yaml.MarkedYAMLError as exc:
        raise _yaml_problem(exc, text) from None
    except yaml.YAMLError as exc:
        raise _LoadProblem((1, 1), f"YAML error: {exc}") from None
    if not roots:
        raise _LoadProblem(
            (1, 1), "the file holds only comments", "declare an integration in it, or delete it", "empty"
        )
    for index, node in enumerate(roots):
        builder = _Builder(record=False)  # positions come later, should a diagnostic need one
        data = builder.build(node, "", 0)
        if not isinstance(data, dict):
            raise _LoadProblem(
                _start(node),
                f"document {index + 1} is a {_kind(data)}, not a mapping",
                "an integration is a mapping of fields: apiVersion, kind, id, name, type, ...",
                "not-a-mapping",
            )
        yield Document(name, index, len(roots), data, _start(node), text)


def _position_tables(text: str, index: int) -> tuple[dict[str, Position], dict[str, Position]]:
    """The positions of the nodes of document `index` of `text`, parsed again."""
    with _positions_of(text):
        roots = [node for node in yaml.compose_all(text, Loader=_Loader) if not _is_blank(node)]
        builder = _Builder(record=True)
        builder.build(roots[index], "", 0)
        return builder.values, builder.keys


def _is_blank(node: yaml.Node | None) -> bool:
    """An empty document, such as the one after a trailing `---`."""
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and node.value in ("", "~", "null")
    )


_SURROGATE_PAIR = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})")


def _join_surrogate_escapes(text: str) -> str:
    """JSON writes characters outside the BMP as two escapes (\\ud83d\\ude00), which YAML
    refuses; write the character itself. Line numbers are unchanged."""
    if "\\u" not in text:
        return text

    def join(match: re.Match[str]) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))

    return _SURROGATE_PAIR.sub(join, text)


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise _LoadProblem(
            (line, column),
            f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            "save the file as UTF-8",
            "encoding",
        ) from None
    return text.removeprefix("\ufeff")


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> _LoadProblem:
    mark = exc.problem_mark or exc.context_mark
    position = _mark_position(mark) if mark else (1, 1)
    message = exc.problem or "YAML syntax error"
    if exc.context and exc.context_mark and mark is not exc.context_mark:
        message = f"{message} ({exc.context} at line {exc.context_mark.line + 1})"
    hint = "check indentation, quoting and that every key is followed by ': '"
    if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
        hint = "YAML does not allow tabs for indentation; indent with spaces"
    return _LoadProblem(position, f"YAML syntax error: {message}", hint)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""


# PyYAML counts NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR as line breaks; editors and
# GitHub count only \n. When a file has them, positions come from character offsets instead.
_EXTRA_BREAKS = ("\x85", "\u2028", "\u2029")
_line_starts: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("line_starts", default=None)


def _position_of_index(index: int, starts: list[int]) -> Position:
    line = bisect.bisect_right(starts, index) - 1
    return (line + 1, index - starts[line] + 1)


def _mark_position(mark: yaml.Mark) -> Position:
    starts = _line_starts.get()
    if starts is None:
        return (mark.line + 1, mark.column + 1)
    return _position_of_index(mark.index, starts)


def _start(node: yaml.Node) -> Position:
    return _mark_position(node.start_mark)


def _kind(value: Any) -> str:
    return {list: "list", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


class _Builder:
    """Builds Python values from a node tree; with `record`, the positions by JSON pointer too."""

    def __init__(self, record: bool = True) -> None:
        self.values: dict[str, Position] = {}
        self.keys: dict[str, Position] = {}
        self.record = record
        self.count = 0

    def _count(self, node: yaml.Node) -> None:
        """One more node built; past the budget the file is refused at this node's line."""
        self.count += 1
        if self.count > MAX_NODES_PER_FILE:
            raise _LoadProblem(
                _start(node),
                f"the document expands to more than {MAX_NODES_PER_FILE:,} nodes"
                " (aliases or merge keys (<<) referring to others?)",
                "use fewer anchors, aliases and <<: merges; an integration file needs none",
                "alias-bomb",
            )

    def build(self, node: yaml.Node, pointer: str, depth: int) -> Any:
        self._count(node)
        if depth > MAX_DEPTH:
            raise _LoadProblem(
                _start(node), f"nesting deeper than {MAX_DEPTH} levels", "flatten the structure", "too-deep"
            )
        if self.record:
            self.values[pointer] = _start(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, pointer, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise _unsupported_tag(node)
            return [self.build(item, f"{pointer}/{i}", depth + 1) for i, item in enumerate(node.value)]
        return _scalar(node)

    def _mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            raise _unsupported_tag(node)
        if depth > MAX_DEPTH:  # merge keys recurse here without passing through build()
            raise _LoadProblem(
                _start(node),
                f"nesting deeper than {MAX_DEPTH} levels (a merge key that includes itself?)",
                "remove the self-referencing <<: merge",
                "too-deep",
            )
        result: dict[str, Any] = {}
        seen: dict[str, Position] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self._merge_sources(value_node, pointer, depth))
                continue
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                kind = _kind(key) if key_node.tag != _MAP else "a mapping"
                raise _LoadProblem(
                    _start(key_node),
                    f"keys must be strings; this key is {kind}",
                    "quote the key (YAML reads on/off/yes/no as booleans and digits as numbers)",
                    "key-type",
                )
            if key in seen:
                first = seen[key]
                raise _LoadProblem(
                    _start(key_node),
                    f"duplicate key {key!r} (first at line {first[0]}, column {first[1]})",
                    "remove one of them: YAML keeps only the last, which hides the first",
                    "duplicate-key",
                )
            position = seen[key] = _start(key_node)
            child = pointer + "/" + (key.replace("~", "~0").replace("/", "~1") if "~" in key or "/" in key else key)
            if self.record:
                self.keys[child] = position
            result[key] = self.build(value_node, child, depth + 1)
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def _merge_sources(self, node: yaml.Node, pointer: str, depth: int) -> dict[str, Any]:
        """`<<: *defaults` or `<<: [*a, *b]`: earlier sources win, explicit keys win over all."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                raise _LoadProblem(
                    _start(source),
                    "a merge key (<<) needs a mapping or a list of mappings",
                    "write <<: *anchor where the anchor names a mapping",
                    "merge",
                )
            # a merge source is expanded like an alias: without this count, `<<: [*prev x20]`
            # over empty mappings merges 20**levels times and never builds a value to count
            self._count(source)
            merged.update(self._mapping(source, pointer, depth + 1))
        return merged


def _scalar(node: yaml.Node) -> Any:
    if node.tag == _STR:
        return node.value  # the common case, and all SafeConstructor would do for it
    if node.tag == _TIMESTAMP:
        return node.value  # timestamps stay strings: the format speaks RFC 3339 text
    if node.tag not in _SCALAR_TAGS:
        raise _unsupported_tag(node)
    if node.tag in (_INT, _FLOAT) and len(node.value) > MAX_NUMBER_CHARS:
        # YAML 1.1's sexagesimal and huge literals cost quadratic time to convert
        raise _LoadProblem(
            _start(node),
            f"a number of {len(node.value):,} characters",
            f"numbers here have at most {MAX_NUMBER_CHARS} characters; quote it if it is text",
            "number",
        )
    return _constructor.yaml_constructors[node.tag](_constructor, node)


def _unsupported_tag(node: yaml.Node) -> _LoadProblem:
    return _LoadProblem(
        _start(node),
        f"unsupported YAML tag {node.tag}",
        "integration files use plain YAML: mappings, lists, strings, numbers, booleans, null",
        "tag",
    )
